"""The tf.data pipeline: shapes, labels, exactly-once evaluation, shuffling, sharding, errors."""

import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from agetf.data import dataset_files, image_ops, input_pipeline, labels, schema
from agetf.data.input_config import InputConfig

IMG_DIM = 32
SHARDED_FILES = 6
PER_FILE = 5
SINGLE_FILE_RECORDS = 40


def _tiny_jpeg(index):
    rng = np.random.default_rng(index)
    return tf.io.encode_jpeg(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).numpy()


def _write_shards(directory, split, num_files, per_file, start=0):
    index = start
    for shard in range(num_files):
        path = os.path.join(directory, dataset_files.shard_name("tiny", split, shard, num_files))
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(per_file):
                writer.write(schema.make_example(
                    jpeg=_tiny_jpeg(index), age=index % 90, gender=index % 2,
                    race=index % 6 - 1, filename=f"face_{index:03d}.jpg", height=24, width=24))
                index += 1


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """No report; train: 6 shards x 5 records; test: 1 shard of 40 records."""
    directory = str(tmp_path_factory.mktemp("tiny"))
    _write_shards(directory, "train", SHARDED_FILES, PER_FILE)
    _write_shards(directory, "test", 1, SINGLE_FILE_RECORDS, start=100)
    # An unfinished shard under a temporary name must be ignored.
    open(os.path.join(directory, "tiny-train.tfrecord-00000-of-00006.tmp"), "wb").close()
    return directory


def _records(data_dir, split):
    """{filename: parsed features} read straight from the shards."""
    files = input_pipeline.list_shards(data_dir, split)
    parsed = (schema.parse_examples(r) for r in tf.data.TFRecordDataset(files))
    return {p["filename"].numpy().decode(): p for p in parsed}


def _filenames(dataset, num_batches=None):
    dataset = dataset if num_batches is None else dataset.take(num_batches)
    return [name.decode() for _, y in dataset for name in y["filename"].numpy()]


def _config(data_dir, **kwargs):
    return InputConfig(data_dir=data_dir, img_dim=IMG_DIM, **kwargs)


def test_training_batches_have_documented_shapes_and_types(data_dir):
    config = _config(data_dir, seed=1)
    dataset = input_pipeline.build_dataset(config, "train", 4, training=True,
                                           include_metadata=True)
    # uint8 at the canvas size: the faces are 200 px, 1/4 of that still leaves 32 px crops.
    canvas = input_pipeline.training_canvas(config)
    assert canvas == image_ops.Canvas(50, 50, 4)
    assert dataset.element_spec[0].shape.as_list() == [4, 50, 50, 3]
    images, targets = next(iter(dataset))
    assert images.dtype == tf.uint8 and images.numpy().max() > 1
    expected = {"age": (tf.float32, [4]), "age_histogram": (tf.float32, [4, 101]),
                "age_range": (tf.int32, [4]), "gender": (tf.float32, [4]),
                "race": (tf.int32, [4]), "filename": (tf.string, [4]),
                # Schema 2 (issue 22): an age range's bounds, and the face's sample weight.
                "age_min": (tf.float32, [4]), "age_max": (tf.float32, [4]),
                "weight": (tf.float32, [4])}
    assert {k: (v.dtype, v.shape.as_list()) for k, v in targets.items()} == expected
    plain = input_pipeline.build_dataset(_config(data_dir), "train", 4, training=True)
    assert "filename" not in plain.element_spec[1]


@pytest.mark.parametrize("cache", [False, True])
def test_training_labels_match_their_records(data_dir, cache):
    records = _records(data_dir, "train")
    dataset = input_pipeline.build_dataset(_config(data_dir, cache=cache, shuffle_buffer=16),
                                           "train", 8, training=True, include_metadata=True)
    canvas = input_pipeline.training_canvas(_config(data_dir))
    for images, targets in dataset.take(3):
        assert images.shape == (8, canvas.height, canvas.width, 3)
        for i, name in enumerate(targets["filename"].numpy()):
            record = records[name.decode()]
            np.testing.assert_array_equal(
                images[i].numpy(), image_ops.decode_to_canvas(record["image"], canvas).numpy())
            assert targets["age"][i] == record["age"].numpy()
            assert targets["gender"][i] == record["gender"].numpy()
            np.testing.assert_allclose(targets["age_histogram"][i], record["age_histogram"])


def test_evaluation_yields_each_record_once_with_exact_labels(data_dir):
    records = _records(data_dir, "validation")
    count = input_pipeline.num_examples(data_dir, "validation")
    assert count == len(records)
    batch_size = 5 if count % 5 else 7
    dataset = input_pipeline.build_dataset(_config(data_dir), "validation", batch_size,
                                           training=False, include_metadata=True)
    sizes, names = [], []
    for images, targets in dataset:
        sizes.append(int(images.shape[0]))
        for i, name in enumerate(targets["filename"].numpy()):
            record = records[name.decode()]
            names.append(name.decode())
            age = int(record["age"])
            assert targets["age"][i] == age
            np.testing.assert_allclose(targets["age_histogram"][i], labels.age_histogram(age),
                                       atol=1e-6)
            assert targets["age_range"][i] == labels.age_range(age)
            assert targets["race"][i] == record["race"].numpy()
            # No augmentation: exactly the serving decode.
            np.testing.assert_array_equal(
                images[i].numpy(), image_ops.decode_and_resize(record["image"], IMG_DIM).numpy())
    assert sorted(names) == sorted(records) and len(names) == count
    assert sizes[-1] == count % batch_size  # the last partial batch is kept
    assert _filenames(dataset) == names  # deterministic order


def test_age_deviation_recomputes_histograms(data_dir):
    dataset = input_pipeline.build_dataset(_config(data_dir, age_deviation=2.0), "validation",
                                           4, training=False)
    _, targets = next(iter(dataset))
    for age, histogram in zip(targets["age"].numpy(), targets["age_histogram"].numpy()):
        np.testing.assert_allclose(histogram, labels.age_histogram(age, 2.0), atol=1e-6)
        assert not np.allclose(histogram, labels.age_histogram(age))


def test_file_order_reshuffles_every_epoch(tiny_dir):
    files = input_pipeline.list_shards(tiny_dir, "train")
    assert len(files) == SHARDED_FILES
    dataset, record_shard = input_pipeline.file_dataset(files, training=True, seed=3)
    assert record_shard is None
    epochs = [[f.decode() for f in dataset.as_numpy_iterator()] for _ in range(3)]
    assert all(sorted(epoch) == files for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1
    assert epochs[0] != files or epochs[1] != files
    evaluation, _ = input_pipeline.file_dataset(files, training=False)
    assert [f.decode() for f in evaluation.as_numpy_iterator()] == files


def _positions(names):
    return np.array([int(name[5:8]) - 100 for name in names])


def test_records_reshuffle_within_and_between_epochs(tiny_dir):
    # One file, so only the record shuffle can move records far from their file order.
    config = _config(tiny_dir, shuffle_buffer=SINGLE_FILE_RECORDS)
    dataset = input_pipeline.build_dataset(config, "test", SINGLE_FILE_RECORDS // 4,
                                           training=True, include_metadata=True)
    names = _filenames(dataset, num_batches=8)
    first, second = _positions(names[:SINGLE_FILE_RECORDS]), _positions(names[SINGLE_FILE_RECORDS:])
    in_order = np.arange(SINGLE_FILE_RECORDS)
    assert np.abs(first - in_order).mean() > SINGLE_FILE_RECORDS / 8
    assert np.abs(second - first).mean() > SINGLE_FILE_RECORDS / 8


def test_training_reshuffles_real_data_between_epochs(data_dir):
    count = input_pipeline.num_examples(data_dir, "train")
    dataset = input_pipeline.build_dataset(_config(data_dir), "train", 1, training=True,
                                           include_metadata=True)
    names = _filenames(dataset, num_batches=2 * count)
    assert names[:count] != names[count:]
    assert set(names) <= set(_records(data_dir, "train"))
    assert len(set(names)) > count // 2


@pytest.mark.parametrize("training", [False, True])
def test_two_pipelines_split_the_files_disjointly(tiny_dir, training):
    records = _records(tiny_dir, "train")
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id)
        dataset = input_pipeline.build_dataset(_config(tiny_dir), "train", 3, training=training,
                                               input_context=context, include_metadata=True)
        seen.append(set(_filenames(dataset, num_batches=20 if training else None)))
    assert not seen[0] & seen[1]
    # Whole files go to one pipeline: each shard's 5 consecutive records stay together.
    shards = [{int(name[5:8]) // PER_FILE for name in names} for names in seen]
    assert not shards[0] & shards[1]
    assert all(len(s) == SHARDED_FILES // 2 for s in shards)
    if not training:  # training samples at random, so only evaluation must see every record
        assert seen[0] | seen[1] == set(records)
        assert all(len(names) == len(s) * PER_FILE for names, s in zip(seen, shards))


def test_fewer_files_than_pipelines_falls_back_to_record_sharding(tiny_dir, caplog):
    seen = []
    with caplog.at_level(logging.WARNING):
        for pipeline_id in range(2):
            context = tf.distribute.InputContext(num_input_pipelines=2,
                                                 input_pipeline_id=pipeline_id)
            dataset = input_pipeline.build_dataset(_config(tiny_dir), "test", 6, training=False,
                                                   input_context=context, include_metadata=True)
            seen.append(_filenames(dataset))
    assert "sharding by record" in caplog.text
    assert len(seen[0]) == len(seen[1]) == SINGLE_FILE_RECORDS // 2
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(_records(tiny_dir, "test"))


def test_num_examples_counts_records_without_a_report(tiny_dir):
    assert input_pipeline.num_examples(tiny_dir, "train") == SHARDED_FILES * PER_FILE
    assert input_pipeline.num_examples(tiny_dir, "test") == SINGLE_FILE_RECORDS


def test_missing_directory_or_split_is_a_one_line_error(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        input_pipeline.list_shards(str(tmp_path / "nowhere"), "train")
    with pytest.raises(ValueError, match="no validation shards"):
        input_pipeline.build_dataset(_config(tiny_dir), "validation", 2, training=False)
    with pytest.raises(ValueError, match="unknown split"):
        input_pipeline.num_examples(tiny_dir, "training")
    with pytest.raises(ValueError, match="batch_size"):
        input_pipeline.build_dataset(_config(tiny_dir), "train", 0, training=True)


@pytest.mark.parametrize("training", [False, True])
def test_corrupt_shard_raises_unless_skipped(tiny_dir, tmp_path, training):
    directory = str(tmp_path / "corrupt")
    shutil.copytree(tiny_dir, directory)
    path = input_pipeline.list_shards(directory, "test")[0]
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    batches = 30 if training else None
    with pytest.raises(tf.errors.DataLossError):
        _filenames(input_pipeline.build_dataset(_config(directory), "test", 4,
                                                training=training, include_metadata=True),
                   num_batches=batches)
    config = _config(directory, skip_corrupt_records=True)
    names = _filenames(input_pipeline.build_dataset(config, "test", 4, training=training,
                                                    include_metadata=True),
                       num_batches=batches)
    assert 0 < len(set(names)) < SINGLE_FILE_RECORDS


@pytest.mark.parametrize("training", [True, False])
def test_an_undecodable_image_in_a_readable_record_raises_unless_skipped(tmp_path, training):
    directory = str(tmp_path / "bad_jpeg")
    os.makedirs(directory)
    path = os.path.join(directory, dataset_files.shard_name("tiny", "test", 0, 1))
    with tf.io.TFRecordWriter(path) as writer:
        for index in range(12):
            jpeg = b"not a jpeg" if index == 5 else _tiny_jpeg(index)
            writer.write(schema.make_example(
                jpeg=jpeg, age=30, gender=0, race=0, filename=f"face_{index:03d}.jpg",
                height=24, width=24))
    batches = 12 if training else None
    with pytest.raises(tf.errors.InvalidArgumentError):
        _filenames(input_pipeline.build_dataset(_config(directory), "test", 4,
                                                training=training, include_metadata=True),
                   num_batches=batches)
    names = _filenames(input_pipeline.build_dataset(
        _config(directory, skip_corrupt_records=True), "test", 4, training=training,
        include_metadata=True), num_batches=batches)
    assert "face_005.jpg" not in names
    if training:  # a batch decodes in one call: the bad image takes its batch with it
        assert len(set(names)) >= 8 and len(names) == 4 * batches
    else:  # evaluation decodes one image per call and loses only that one
        assert sorted(names) == [f"face_{i:03d}.jpg" for i in range(12) if i != 5]


def test_remote_paths_are_told_from_local_ones():
    # Remote shards get parallel readers to hide latency; local ones read in one thread.
    assert input_pipeline.is_remote("gs://bucket/faces-train.tfrecord-00000-of-00004")
    assert not input_pipeline.is_remote("/data/faces-train.tfrecord-00000-of-00004")
