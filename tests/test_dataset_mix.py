"""Several datasets in one run: --data_dir's weights, the mix's proportions, per-dataset
reports, and --init_from (a new run from a finished run's weights)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from agetf import UsageError
from agetf import config as config_lib
from agetf.data import dataset_files, dataset_mix, input_pipeline, schema
from agetf.data.input_config import DataSource, InputConfig, parse_data_dirs
from agetf.modeling.model_config import ModelConfig

from tiny_runs import tiny_config  # pytest puts tests/ on sys.path

IMG_DIM = 32


def _jpeg(index):
    rng = np.random.default_rng(index)
    return tf.io.encode_jpeg(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).numpy()


def write_dataset(directory, prefix, ages, per_split=(24, 8, 8), partial=False):
    """A converted-looking dataset: one shard per split, files named PREFIX_N.jpg; `partial`:
    every other age a decade around it, every third gender unknown (schema 2)."""
    os.makedirs(directory, exist_ok=True)
    index = 0
    for split, count in zip(dataset_files.SPLITS, per_split):
        path = os.path.join(directory, dataset_files.shard_name(prefix, split, 0, 1))
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(count):
                age = ages[index % len(ages)]
                labels = dict(age=age, gender=index % 2)
                if partial and index % 2:
                    labels.update(age=None, age_min=age - 5, age_max=age + 4)
                if partial and index % 3 == 0:
                    labels.update(gender=None)
                writer.write(schema.make_example(
                    jpeg=_jpeg(index), race=0, filename=f"{prefix}_{index:04d}.jpg", height=24,
                    width=24, **labels))
                index += 1
    return str(directory)


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    """Dataset `young` (ages 1-20, 24 train faces) and `old` (ages 60-80, 16 train faces, half
    of them age ranges, a third without gender)."""
    root = tmp_path_factory.mktemp("mix")
    young = write_dataset(root / "young", "young", list(range(1, 21)))
    old = write_dataset(root / "old", "old", list(range(60, 81)), per_split=(16, 8, 8),
                        partial=True)
    return young, old


# -- --data_dir's text --------------------------------------------------------------------

def test_a_single_path_is_one_dataset_as_before():
    assert parse_data_dirs("tfrecords/utkface") == (DataSource("tfrecords/utkface", 1.0),)
    config = InputConfig(data_dir="tfrecords/utkface")
    assert config.data_dir == "tfrecords/utkface" and not config.mixed
    # A lone dataset's weight means nothing: data_dir is its path.
    assert InputConfig(data_dir="tfrecords/utkface:3").data_dir == "tfrecords/utkface"


def test_weights_parse_and_urls_stay_whole():
    assert parse_data_dirs("tfrecords/imdb_wiki:1,tfrecords/utkface:3") == (
        DataSource("tfrecords/imdb_wiki", 1.0), DataSource("tfrecords/utkface", 3.0))
    assert parse_data_dirs("gs://bucket/a,gs://bucket/b:0.5") == (
        DataSource("gs://bucket/a", 1.0), DataSource("gs://bucket/b", 0.5))
    config = InputConfig(data_dir="a/x:1, b/y:2")
    assert config.mixed and [source.name for source in config.sources] == ["x", "y"]
    assert [c.data_dir for _, c in config.for_each_dataset()] == ["a/x", "b/y"]


@pytest.mark.parametrize("text, message", [
    ("a:0,b:1", "item 'a:0' must be PATH or PATH:WEIGHT with a weight > 0"),
    ("a:x,b", "item 'a:x' must be PATH or PATH:WEIGHT"),
    ("a,,b", "item '' must be PATH"),
    ("a:1,./a:2", "names a twice"),
    ("x/data:1,y/data:1", "names data in two folders of the same name"),
])
def test_bad_data_dirs_are_refused_in_one_line(text, message):
    with pytest.raises(UsageError, match=message) as error:
        InputConfig(data_dir=text)
    assert "\n" not in str(error.value)


def test_the_flags_take_several_datasets_and_init_from(parse_train_flags, tmp_path):
    from agetf import train

    parse_train_flags("--data_dir=tfrecords/a:1,tfrecords/b:3", f"--model_dir={tmp_path}/b",
                      f"--init_from={tmp_path}/a")
    built = train.build_config()
    assert [(s.path, s.weight) for s in built.input.sources] == [("tfrecords/a", 1.0),
                                                                ("tfrecords/b", 3.0)]
    assert built.init_from == f"{tmp_path}/a"
    parse_train_flags("--data_dir=tfrecords/a", f"--model_dir={tmp_path}/b")
    assert train.build_config().init_from is None


def test_init_from_its_own_model_dir_is_refused(tmp_path):
    with pytest.raises(UsageError, match="is this run's own --model_dir"):
        tiny_config("tfrecords/a", tmp_path, init_from=str(tmp_path) + "/")


def test_report_names_carry_the_dataset():
    settings = config_lib.EvalConfig()
    assert settings.dataset_report_name("utkface") == "evaluation_utkface.json"
    assert (config_lib.EvalConfig(split="validation", protocol="ages_21_60")
            .dataset_report_name("utkface") == "evaluation_utkface_validation_ages_21_60.json")
    assert settings.dataset_report_name(None) == settings.report_name == "evaluation.json"


# -- the mix --------------------------------------------------------------------------------

def _draws(config, batches, batch_size=32):
    dataset = input_pipeline.build_dataset(config, "train", batch_size, training=True,
                                           include_metadata=True)
    names = [name.decode() for _, y in dataset.take(batches) for name in y["filename"].numpy()]
    return np.array([name.split("_")[0] for name in names])


@pytest.mark.parametrize("cache", [False, True])
def test_the_mix_draws_each_dataset_in_proportion_to_its_weight(two_datasets, cache):
    young, old = two_datasets
    config = InputConfig(data_dir=f"{young}:1,{old}:3", img_dim=IMG_DIM, seed=5, cache=cache,
                         shuffle_buffer=8)
    draws = _draws(config, batches=125)  # 4,000 faces: the share's sd is 0.007
    assert len(draws) == 4000
    assert abs(np.mean(draws == "old") - 0.75) < 0.03, np.mean(draws == "old")
    # Equal weights, though `young` holds more faces: the weights decide, not the sizes.
    even = _draws(dataclasses_replace(config, data_dir=f"{young}:1,{old}:1"), batches=125)
    assert abs(np.mean(even == "old") - 0.5) < 0.03


def dataclasses_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_a_single_dataset_reads_exactly_as_before(two_datasets):
    young, _ = two_datasets
    one = InputConfig(data_dir=young, img_dim=IMG_DIM, seed=5)
    weighted = InputConfig(data_dir=f"{young}:4", img_dim=IMG_DIM, seed=5)
    assert not weighted.mixed and weighted.sources == one.sources
    assert set(_draws(one, 3)) == set(_draws(weighted, 3)) == {"young"}


def test_evaluation_of_a_mix_reads_every_record_of_each_once(two_datasets):
    young, old = two_datasets
    config = InputConfig(data_dir=f"{young}:1,{old}:3", img_dim=IMG_DIM)
    dataset = input_pipeline.build_dataset(config, "validation", 5, training=False,
                                           include_metadata=True)
    names = [name.decode() for _, y in dataset for name in y["filename"].numpy()]
    assert len(names) == len(set(names)) == 16
    assert {name.split("_")[0] for name in names} == {"young", "old"}


def test_the_epoch_is_the_train_splits_sum_and_is_stated(two_datasets):
    young, old = two_datasets
    config = InputConfig(data_dir=f"{young}:1,{old}:3", img_dim=IMG_DIM)
    sizes = dataset_mix.split_sizes(config)
    assert sizes == [24, 16]
    line = dataset_mix.describe(config, sizes, batch_size=8, steps_per_epoch=5)
    assert line == (f"Mixing 2 datasets: {young} (24 train faces, weight 1: 25% of the draws, "
                    f"0.42 passes); {old} (16 train faces, weight 3: 75% of the draws, 1.88 "
                    "passes). One epoch = 5 steps of 8 = 40 faces (the train splits' sum is 40)")


# -- a run on two datasets, and --init_from ---------------------------------------------------

@pytest.fixture(scope="module")
def mixed_run(two_datasets, tmp_path_factory):
    """A finished run on young:1,old:3 (histogram and gender heads), and what it printed."""
    from agetf.training import train_lib

    young, old = two_datasets
    model_dir = tmp_path_factory.mktemp("mixed") / "run_a"
    run = tiny_config(f"{young}:1,{old}:3", model_dir, heads=("age_histogram", "gender"),
                      epochs=1, steps_per_epoch=0, batch_size=8, summary_images=0, verbose=True,
                      export=config_lib.ExportConfig(saved_model=False),
                      evaluation=config_lib.EvalConfig(print_predictions=0))
    return run, train_lib.run(run)


@pytest.mark.slow
def test_a_mixed_run_reports_each_dataset_alone(mixed_run, capsys):
    run, report = mixed_run
    model_dir = run.model_dir
    assert not os.path.exists(os.path.join(model_dir, "evaluation.json"))
    saved = {name: json.load(open(os.path.join(model_dir, f"evaluation_{name}.json")))
             for name in ("young", "old")}
    assert set(report["datasets"]) == {"young", "old"}
    for name in ("young", "old"):
        assert saved[name] == json.loads(json.dumps(report["datasets"][name]))
        assert saved[name]["num_images"] == 8
    # Each against its own test faces and its own constant predictor.
    assert saved["young"]["constant_baseline"]["constant_age"] < 21
    assert saved["old"]["constant_baseline"]["constant_age"] >= 60
    assert saved["young"]["metrics"]["mae"] != saved["old"]["metrics"]["mae"]
    # `old` trained and is scored with its ranges and unknown genders (issue 22, section 2).
    assert "age_ranges" not in saved["young"]
    assert saved["old"]["labels"] == {"exact_age": 4, "age_range": 4, "unknown_age": 0,
                                      "unknown_gender": 3}
    assert saved["old"]["age_ranges"]["count"] == 4
    assert 0 <= saved["old"]["age_ranges"]["inside"] <= 1
    assert np.isfinite(report["history"]["loss"][0])
    assert report["history"]["epoch"] == [1]


@pytest.mark.slow
def test_init_from_starts_a_new_run_from_the_finished_runs_weights(mixed_run, two_datasets,
                                                                   tmp_path, capsys):
    from agetf.training import distributed_trainer as trainer_lib
    from agetf.training import run_files

    run_a, _ = mixed_run
    _, old = two_datasets
    model_a = run_files.load_trained_model(run_a.model_dir)
    # Run B: another dataset, and an age_range head that run A lacks.
    run_b = tiny_config(old, tmp_path / "run_b", heads=("age_histogram", "age_range", "gender"),
                        verbose=True, init_from=run_a.model_dir)
    trainer = trainer_lib.Trainer(run_b)
    out = capsys.readouterr().out
    assert f"Initialised from {run_a.model_dir}: backbone, gender, age_histogram copied" in out
    assert (f"--init_from: head(s) age_range not in {run_a.model_dir}: they start from fresh "
            "weights") in out
    images = np.random.default_rng(3).uniform(0, 255, (4, IMG_DIM, IMG_DIM, 3)).astype("float32")
    before = trainer.model(images, training=False)
    expected = model_a(images, training=False)
    for head in ("age_histogram", "gender"):
        np.testing.assert_allclose(before[head], expected[head], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_init_from_refuses_another_backbone_and_an_unfinished_run(mixed_run, two_datasets,
                                                                  tmp_path):
    from agetf.training import distributed_trainer as trainer_lib

    run_a, _ = mixed_run
    _, old = two_datasets
    wider = tiny_config(old, tmp_path / "wider", init_from=run_a.model_dir,
                        model=ModelConfig(img_dim=IMG_DIM, heads=("age_histogram",), alpha=0.5,
                                          weights="none"))
    with pytest.raises(UsageError, match=r"this model's backbone layer does not fit that run's "
                                         r"\(its weights have other shapes\); use that run's "
                                         "--base_model and --alpha"):
        trainer_lib.Trainer(wider)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="holds no best.keras or final.keras"):
        trainer_lib.Trainer(tiny_config(old, tmp_path / "b", init_from=str(empty)))
