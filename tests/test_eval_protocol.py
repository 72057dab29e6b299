"""Evaluation others can compare with: protocols, breakdowns beside the constant baseline,
and split files that reproduce a published split exactly."""

import csv
import json
import os

import numpy as np
import pytest

from agetf.data import (
    conversion,
    conversion_report,
    convert_config,
    labels,
    names,
    split_files,
    synthetic,
)
from agetf.data.input_config import InputConfig
from agetf.evaluation import evaluator
from agetf.modeling import model as model_lib

from tiny_runs import calibrate_batchnorm  # pytest puts tests/ on sys.path

IMG_DIM = 32


def fake_outputs(predicted_ages, female_probability):
    """Model outputs whose histogram expectation is (close to) the given ages."""
    histograms = np.stack([labels.age_histogram(age, 1.0) for age in predicted_ages])
    return {"age_histogram": histograms, "gender": np.asarray(female_probability, np.float32)}


def test_protocol_masks():
    ages = np.array([0, 20, 21, 40, 60, 61, 90])
    assert evaluator.protocol_mask(ages, "random").all()
    assert evaluator.protocol_mask(ages, "ages_21_60").tolist() == [
        False, False, True, True, True, False, False]
    with pytest.raises(ValueError, match="unknown evaluation protocol 'imdb'"):
        evaluator.protocol_mask(ages, "imdb")


def test_breakdowns_by_decade_gender_and_race_with_unknown_race_and_the_baseline():
    true_age = np.array([25, 27, 33, 70, 85])
    predicted = [27, 27, 30, 60, 85]
    unknown = names.UNKNOWN_RACE
    batch_labels = {"age": true_age, "gender": np.array([0, 1, 1, 0, 1]),
                    "race": np.array([0, unknown, unknown, 2, 0]),
                    "age_range": labels.age_range(true_age)}
    outputs = fake_outputs(predicted, [0.2, 0.9, 0.3, 0.1, 0.8])
    report = evaluator.summarize(outputs, batch_labels, train_ages=np.array([20, 30, 40]),
                                  train_genders=np.array([0, 0, 1]))
    assert report["metrics"]["mae"] == pytest.approx((2 + 0 + 3 + 10 + 0) / 5, abs=0.05)
    assert report["metrics"]["gender_accuracy"] == pytest.approx(4 / 5)
    baseline = report["constant_baseline"]
    assert baseline["constant_age"] == 30 and baseline["constant_gender"] == "male"
    assert baseline["mae"] == pytest.approx((5 + 3 + 3 + 40 + 55) / 5)
    assert baseline["gender_accuracy"] == pytest.approx(2 / 5)

    by_decade = {row["group"]: row for row in report["by_age_decade"]}
    assert {g: r["count"] for g, r in by_decade.items()} == {"20-29": 2, "30-39": 1, "70-79": 1,
                                                             "80+": 1}
    assert by_decade["70-79"]["mae"] == pytest.approx(10, abs=0.05)
    # The constant predictor (age 30, male) beside the model in every group.
    assert by_decade["20-29"]["constant_mae"] == pytest.approx((5 + 3) / 2)
    assert by_decade["80+"]["constant_mae"] == pytest.approx(55)
    assert by_decade["20-29"]["constant_gender_accuracy"] == pytest.approx(0.5)
    by_race = {row["group"]: row for row in report["by_race"]}
    assert {g: r["count"] for g, r in by_race.items()} == {"unknown": 2, "white": 2, "asian": 1}
    assert by_race["unknown"]["mae"] == pytest.approx(1.5, abs=0.05)
    assert by_race["unknown"]["gender_accuracy"] == pytest.approx(0.5)
    assert by_race["unknown"]["constant_mae"] == pytest.approx((3 + 3) / 2)
    assert by_race["unknown"]["constant_gender_accuracy"] == 0.0
    by_gender = {row["group"]: row for row in report["by_gender"]}
    assert {g: r["count"] for g, r in by_gender.items()} == {"male": 2, "female": 3}
    assert by_gender["male"]["constant_gender_accuracy"] == 1.0
    assert by_gender["female"]["constant_gender_accuracy"] == 0.0
    json.dumps(report)  # evaluation.json must be plain JSON
    # With a range head, the constant predictor's range is the median's, [30, 35): 1 of 5.
    with_range = {**outputs, "age_range": np.eye(labels.NUM_AGE_RANGES)[labels.age_range(true_age)]}
    ranged = evaluator.summarize(with_range, batch_labels, train_ages=np.array([20, 30, 40]),
                                  train_genders=np.array([0, 0, 1]))
    assert ranged["metrics"]["age_range_accuracy"] == 1.0
    assert ranged["constant_baseline"]["age_range_accuracy"] == pytest.approx(1 / 5)

    text = evaluator.format_report({**report, "protocol": "ages_21_60"})
    assert "protocol ages_21_60: images aged 21 to 60 only" in text
    assert "unknown" in text and "by race:" in text and "constant" in text
    assert "80+" in text and "MAE   0.00 (constant  55.00)" in text
    # The summary rows, worked out by hand: model errors 2, 0, 3, 10, 0 (MAE 3, 4 of 5 within
    # 5 years); constant 30 errs by 5, 3, 3, 40, 55 (MAE 21.2, 3 of 5 within 5 years).
    rows = text.splitlines()
    assert rows[1].split() == ["metric", "model", "constant"]
    assert rows[2:5] == [f"{'mae':<22}{'3.000':>10}{'21.200':>10}",
                         f"{'cs5':<22}{'0.800':>10}{'0.600':>10}",
                         f"{'gender_accuracy':<22}{'0.800':>10}{'0.400':>10}"]


def test_prediction_lines_with_a_range_head():
    # Range 30-35 at 0.7 and 35-40 at 0.3: 0.7 * 32.5 + 0.3 * 37.5 = 34.0 years; 80+ reads 85.
    probabilities = np.zeros((2, labels.NUM_AGE_RANGES), np.float32)
    probabilities[0, [6, 7]] = [0.7, 0.3]
    probabilities[1, 16] = 1.0
    true_age = np.array([33, 79])
    outputs = {"age_range": probabilities, "gender": np.array([0.8, 0.3], np.float32)}
    batch_labels = {"age": true_age, "age_range": labels.age_range(true_age),
                    "gender": np.array([1.0, 1.0]),
                    "filename": np.array([b"33_1_0_a.jpg.chip.jpg", b"79_1_0_b.jpg.chip.jpg"])}
    lines = evaluator.prediction_lines(outputs, batch_labels, count=5)
    assert lines == [
        "Predicting for image 33_1_0_a.jpg.chip.jpg",
        "Predicted age: 34.0, true age: 33",
        "Predicted range: 30-35, true range: 30-35",
        "Predicted gender: female, true gender: female",
        "Predicting for image 79_1_0_b.jpg.chip.jpg",
        "Predicted age: 85.0, true age: 79",
        "Predicted range: 80+, true range: 75-80",
        "Predicted gender: male, true gender: female",
    ]
    assert evaluator.prediction_lines(outputs, batch_labels, count=1) == lines[:4]
    ranged = {**batch_labels, "age_min": np.array([30, -1]), "age_max": np.array([39, -1]),
              "gender": np.array([-1, 0])}
    assert evaluator.prediction_lines(outputs, ranged, count=5) == [
        "Predicting for image 33_1_0_a.jpg.chip.jpg",
        "Predicted age: 34.0, true age: 30-39",  # a range: no true range class either
        "Predicted range: 30-35",
        "Predicted gender: female",  # unknown gender: nothing, not 'male'
        "Predicting for image 79_1_0_b.jpg.chip.jpg",
        "Predicted age: 85.0",
        "Predicted range: 80+",
        "Predicted gender: male, true gender: male",
    ]
    report = evaluator.summarize(outputs, {**batch_labels, "race": np.array([0, 0])},
                                  train_ages=np.array([30]), train_genders=np.array([1]))
    assert report["metrics"]["age_range_accuracy"] == 0.5
    assert report["metrics"]["mae"] == pytest.approx((1 + 6) / 2, abs=1e-4)


@pytest.fixture(scope="module")
def tiny_model():
    model = model_lib.build_model(backbone="MobileNetV2", img_dim=IMG_DIM,
                                  heads=["age_histogram", "gender"], alpha=0.35)
    calibrate_batchnorm(model, np.random.default_rng(1).uniform(0, 255, (8, IMG_DIM, IMG_DIM, 3))
                        .astype("float32"))
    return model


def test_evaluate_under_each_protocol(tiny_model, data_dir):
    config = InputConfig(data_dir=data_dir, img_dim=IMG_DIM)
    test_ages, _ = evaluator.split_ages_and_genders(data_dir, "test")
    train_ages, _ = evaluator.split_ages_and_genders(data_dir, "train")
    kept = int(((test_ages >= 21) & (test_ages <= 60)).sum())
    assert 0 < kept < len(test_ages), "the fixture must have test ages on both sides of the range"

    everything, _ = evaluator.evaluate(tiny_model, config, protocol="random")
    narrow, lines = evaluator.evaluate(tiny_model, config, protocol="ages_21_60",
                                        print_predictions=3)
    assert everything["protocol"] == "random" and everything["num_images"] == len(test_ages)
    assert narrow["protocol"] == "ages_21_60" and narrow["num_images"] == kept
    assert all(row["group"] in ("20-29", "30-39", "40-49", "50-59", "60-69")
               for row in narrow["by_age_decade"])
    assert sum(row["count"] for row in narrow["by_race"]) == kept
    in_range = train_ages[(train_ages >= 21) & (train_ages <= 60)]
    assert narrow["constant_baseline"]["constant_age"] == float(np.median(in_range))
    assert everything["constant_baseline"]["constant_age"] == float(np.median(train_ages))
    true_ages = [int(line.rsplit(" ", 1)[-1]) for line in lines if "true age:" in line]
    assert len(true_ages) == 3 and all(21 <= age <= 60 for age in true_ages)
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        evaluator.evaluate(tiny_model, config, protocol="imdb")


# --- split files ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_faces(tmp_path_factory):
    folder = tmp_path_factory.mktemp("split_faces")
    synthetic.write_synthetic_faces(str(folder), count=30, seed=3, size=48)
    return str(folder)


def convert(input_dir, output_dir, **settings):
    return conversion.convert(convert_config.ConvertConfig(
        input_dirs=[input_dir], output_dir=str(output_dir), min_shards=1, workers=1,
        show_progress=False, **settings))


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_a_written_split_file_reproduces_the_split_exactly(small_faces, tmp_path):
    first = convert(small_faces, tmp_path / "a", write_split_file=True)
    rows = read_rows(tmp_path / "a" / "splits.csv")
    assert rows[0] == ["filename", "split"]
    assert len(rows) - 1 == first["total_kept"] == 30
    assert all(split == split_files.assign_split(name) for name, split in rows[1:])

    # Another ratio would move files, but the split file wins.
    again = convert(small_faces, tmp_path / "b", split_file=str(tmp_path / "a" / "splits.csv"),
                    split_ratios=(0.34, 0.33, 0.33), write_split_file=True)
    assert read_rows(tmp_path / "b" / "splits.csv") == rows
    assert again["counts"] == first["counts"]
    assert again["settings"]["split_file"] == str(tmp_path / "a" / "splits.csv")


def test_a_published_split_is_used_exactly_and_unlisted_files_are_skipped(small_faces, tmp_path):
    names = sorted(os.listdir(small_faces))
    published = tmp_path / "published.csv"
    # No header; every split named explicitly; a path prefix is reduced to the file name.
    published.write_text("".join(
        [f"UTKFace/{name},train\n" for name in names[:20]]
        + [f"{name},validation\n" for name in names[20:23]]
        + [f"{name},test\n" for name in names[23:27]] + ["ghost.jpg,test\n"]))
    report = convert(small_faces, tmp_path / "out", split_file=str(published),
                     write_split_file=True)
    assert report["counts"] == {"train": 20, "validation": 3, "test": 4}
    skipped = {os.path.basename(item["path"]): item["reason"] for item in report["skipped"]}
    assert skipped == {name: "not in the split file" for name in names[27:]}
    assert report["settings"]["split_file_missing"] == ["ghost.jpg"]
    assert ("1 files of the split file are not in the input (e.g. ghost.jpg)"
            in conversion_report.summarize(report))
    written = dict(read_rows(tmp_path / "out" / "splits.csv")[1:])
    assert written == {**{n: "train" for n in names[:20]},
                       **{n: "validation" for n in names[20:23]},
                       **{n: "test" for n in names[23:27]}}


@pytest.mark.parametrize("text,message", [
    ("a.jpg,holdout\n", "row 1"),
    ("a.jpg\n", "row 1"),
    ("filename,split\na.jpg,train\na.jpg,test\n", "both train and test"),
    ("filename,split\n", "lists no file"),
])
def test_bad_split_files_are_one_line_errors(small_faces, tmp_path, text, message):
    path = tmp_path / "split.csv"
    path.write_text(text)
    with pytest.raises(convert_config.ConversionError, match=message) as error:
        convert(small_faces, tmp_path / "out", split_file=str(path))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists(), "nothing may be written for a bad split file"


def test_a_missing_split_file_is_a_one_line_error(small_faces, tmp_path):
    with pytest.raises(convert_config.ConversionError, match="cannot read --split_file"):
        convert(small_faces, tmp_path / "out", split_file=str(tmp_path / "missing.csv"))
