"""Calibrating the age interval on known truth, and the calibration report: coverage by
share and age decade, the female probability's ECE and its reliability plot
(agetf.evaluation.interval_calibration, agetf.training.plots, agetf.training.run_calibration)."""

import json

import numpy as np
import pytest
from PIL import Image

from agetf.data import labels
from agetf.evaluation import interval_calibration
from agetf.training import plots, run_calibration


def gaussian_predictions(count, predicted_deviation, true_deviation, seed):
    """Histograms of width `predicted_deviation` around guesses that miss the true age by
    `true_deviation` (years, or a function of the true age) on average: over-confident when
    the first is smaller."""
    rng = np.random.default_rng(seed)
    true_ages = rng.integers(5, 90, count)
    deviation = true_deviation(true_ages) if callable(true_deviation) else true_deviation
    guesses = np.clip(true_ages + rng.normal(0, 1, count) * deviation, 0, 100)
    histograms = np.stack([labels.age_histogram(guess, predicted_deviation) for guess in guesses])
    return histograms, true_ages


def test_calibration_brings_an_over_confident_models_80_percent_near_80():
    validation, validation_ages = gaussian_predictions(2000, 4.0, 8.0, seed=0)
    test, test_ages = gaussian_predictions(2000, 4.0, 8.0, seed=1)
    calibration = interval_calibration.fit({"age_histogram": validation}, validation_ages)
    # Gaussians twice too narrow: temperatures near 4 (the width grows as its square root),
    # one per predicted-age decade here.
    assert len(calibration.knots) >= 7
    assert all(2.8 < temperature < 5.5 for _, temperature in calibration.knots)
    assert calibration.coverage_before < 0.6 and calibration.coverage_after == pytest.approx(
        0.8, abs=0.02)
    temperatures = interval_calibration.face_temperatures(test, calibration.knots)
    before = interval_calibration.coverage(test, test_ages, 0.8)[0]
    after = interval_calibration.coverage(test, test_ages, 0.8, temperatures)[0]
    assert before < 0.6 and after == pytest.approx(0.8, abs=0.03)
    # Gaussian errors: the other shares hold too.
    for share in (0.5, 0.95):
        assert interval_calibration.coverage(
            test, test_ages, share, temperatures)[0] == pytest.approx(share, abs=0.03)


def test_errors_growing_with_age_get_temperatures_growing_with_age():
    """One temperature cannot hold 80% in every decade when the errors grow with age and the
    histograms do not; a temperature per predicted-age group can."""
    def growing(ages):
        return 2.0 + ages / 8.0

    validation, validation_ages = gaussian_predictions(3000, 4.0, growing, seed=6)
    test, test_ages = gaussian_predictions(3000, 4.0, growing, seed=7)
    calibration = interval_calibration.fit({"age_histogram": validation}, validation_ages)
    temperatures = [temperature for _, temperature in calibration.knots]
    assert temperatures[0] < 1 < 4 < temperatures[-1]
    single = interval_calibration.fit({"age_histogram": validation}, validation_ages,
                                      min_faces=len(validation_ages))
    assert len(single.knots) == 1
    report = interval_calibration.interval_report({"age_histogram": test}, test_ages,
                                                  calibration.knots)
    one = interval_calibration.interval_report({"age_histogram": test}, test_ages, single.knots)
    decades = [row for row in report["rows"][1:] if row["count"] >= 100]
    assert min(row["coverage_80_after"] for row in decades) >= 0.7
    assert min(row["coverage_80_after"] for row in one["rows"][1:] if row["count"] >= 100) < 0.7
    assert report["rows"][0]["coverage_80_after"] == pytest.approx(0.8, abs=0.03)


def test_groups_merge_decades_up_to_the_minimum():
    ages = np.array([1, 2, 3] + [15] * 5 + [25] * 2 + [95])
    groups = interval_calibration.age_groups(ages, min_faces=3)
    assert [list(np.flatnonzero(group)) for group in groups] == [
        [0, 1, 2], [3, 4, 5, 6, 7], [8, 9, 10]]
    assert len(interval_calibration.age_groups(ages, min_faces=100)) == 1


def test_an_under_confident_model_is_narrowed_down_to_the_floor():
    validation, ages = gaussian_predictions(2000, 10.0, 4.0, seed=2)
    calibration = interval_calibration.fit({"age_histogram": validation}, ages)
    # (4 / 10) ** 2 = 0.16 would be exact; narrowing stops at 0.5.
    assert all(t == pytest.approx(0.5) for _, t in calibration.knots), calibration.knots
    assert calibration.coverage_before > calibration.coverage_after > 0.8
    validation, ages = gaussian_predictions(2000, 5.0, 4.0, seed=2)
    calibration = interval_calibration.fit({"age_histogram": validation}, ages)
    assert all(0.5 < t < 0.9 for _, t in calibration.knots)
    assert calibration.coverage_after == pytest.approx(0.8, abs=0.02)


def test_ranges_calibrate_and_regression_has_nothing_to_calibrate():
    rng = np.random.default_rng(3)
    true_ages = rng.integers(0, 80, 500)
    # All mass on the true range or the next: over-confident in one of two faces.
    ranges = np.zeros((500, labels.NUM_AGE_RANGES), np.float32)
    ranges[np.arange(500), np.minimum(labels.age_range(true_ages) + rng.integers(0, 2, 500),
                                      labels.NUM_AGE_RANGES - 1)] = 1.0
    ranges = 0.98 * ranges + 0.02 / labels.NUM_AGE_RANGES
    calibration = interval_calibration.fit({"age_range": ranges}, true_ages)
    assert calibration.head == "age_range" and all(t > 1 for _, t in calibration.knots)
    assert calibration.coverage_after >= 0.8 > calibration.coverage_before
    assert interval_calibration.fit({"age": true_ages / 100.0}, true_ages) is None


def test_expected_calibration_error_of_a_constructed_example():
    # Bin 0.1-0.2: mean 0.1, one woman in two (|0.5 - 0.1| = 0.4); bin 0.9-1.0: mean 0.9,
    # both women (0.1); each holds half the faces.
    error, rows = interval_calibration.expected_calibration_error(
        [0.1, 0.1, 0.9, 0.9], [False, True, True, True])
    assert error == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert [(row["low"], row["count"], row["female_share"]) for row in rows] == [
        (0.1, 2, 0.5), (0.9, 2, 1.0)]
    rng = np.random.default_rng(4)
    probabilities = rng.uniform(0, 1, 20000)
    calibrated, _ = interval_calibration.expected_calibration_error(
        probabilities, rng.uniform(0, 1, 20000) < probabilities)
    overconfident, _ = interval_calibration.expected_calibration_error(
        np.where(probabilities > 0.5, 1.0, 0.0), rng.uniform(0, 1, 20000) < probabilities)
    assert calibrated < 0.02 and overconfident > 0.2


def test_report_counts_exact_ages_and_known_genders_by_decade():
    histograms, ages = gaussian_predictions(400, 4.0, 8.0, seed=5)
    batch_labels = {"age": ages.copy(), "age_min": ages.copy(), "age_max": ages.copy(),
                    "gender": np.arange(400) % 2}
    batch_labels["age"][:10] = -1  # unknown ages
    batch_labels["age_min"][10:20] -= 3  # ranges of years
    batch_labels["gender"][:30] = -1  # unknown genders
    outputs = {"age_histogram": histograms, "gender": np.full(400, 0.7)}
    report = interval_calibration.report_sections(outputs, batch_labels, ((30.0, 4.0),))
    rows = report["age_interval"]["rows"]
    assert rows[0]["group"] == "all" and rows[0]["count"] == 380
    assert sum(row["count"] for row in rows[1:]) == 380
    assert [row["group"] for row in rows[1:]] == [
        group for group in ("0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69",
                            "70-79", "80+") if any(r["group"] == group for r in rows)]
    for row in rows:
        for share in (50, 80, 95):
            assert row[f"coverage_{share}_before"] <= row[f"coverage_{share}_after"]
            assert row[f"width_{share}_before"] < row[f"width_{share}_after"]
    assert rows[0]["coverage_80_before"] < 0.6 < rows[0]["coverage_80_after"]
    gender = report["gender_calibration"]
    assert sum(row["count"] for row in gender["reliability"]) == 370
    assert gender["ece"] == pytest.approx(abs(0.7 - 0.5), abs=0.01)
    lines = interval_calibration.format_sections(report)
    assert lines[0].startswith("age interval (age_histogram; temperature 4.00 at 30)")
    assert lines[1].split()[:2] == ["all", "n=380"] and lines[-1].startswith(
        "female probability: expected calibration error 0.2")
    json.dumps(report)  # JSON-ready


def test_reliability_plot_is_written_beside_the_report(tmp_path):
    report = {"gender_calibration": {"ece": 0.05, "bins": 10, "reliability": [
        {"low": 0.0, "high": 0.1, "count": 40, "mean_probability": 0.03, "female_share": 0.05},
        {"low": 0.9, "high": 1.0, "count": 50, "mean_probability": 0.96, "female_share": 0.9}]}}
    path = run_calibration.report_calibration(report, str(tmp_path / "evaluation_ages_21_60.json"))
    assert path == str(tmp_path / "plots" / "gender_reliability_ages_21_60.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 300
    plots.plot_reliability([], 0.0, str(tmp_path / "empty.png"))  # no faces: still a plot
    assert run_calibration.report_calibration({}, str(tmp_path / "evaluation.json")) is None


@pytest.mark.slow
def test_a_run_calibrates_on_validation_reports_and_exports_the_temperature(data_dir, tmp_path):
    import tensorflow as tf

    from agetf import config as config_lib
    from agetf.data import input_pipeline, labels
    from agetf.modeling import age_intervals
    from agetf.training import run_files, train_lib

    from tiny_runs import tiny_config  # pytest puts tests/ on sys.path

    run = tiny_config(data_dir, tmp_path / "run", heads=("age_histogram", "gender"), epochs=1,
                      summary_images=0, evaluation=config_lib.EvalConfig(print_predictions=0))
    report = train_lib.run(run)
    calibration = json.load(open(tmp_path / "run" / interval_calibration.CALIBRATION_FILE))
    assert calibration["split"] == "validation" and calibration["head"] == "age_histogram"
    assert calibration["faces"] == input_pipeline.num_examples(data_dir, "validation")
    assert calibration["coverage_after"] >= 0.8
    knots = [tuple(knot) for knot in calibration["knots"]]
    assert [tuple(knot) for knot in report["age_interval"]["knots"]] == knots
    assert report["age_interval"]["rows"][0]["count"] == report["num_images"]
    assert 0 <= report["gender_calibration"]["ece"] <= 1
    assert (tmp_path / "run" / "plots" / "gender_reliability.png").is_file()
    saved = json.load(open(tmp_path / "run" / "evaluation.json"))
    assert saved["age_interval"] == report["age_interval"]
    # The export applies the temperature to the trained model's histogram.
    model = run_files.load_trained_model(str(tmp_path / "run"))
    images = np.random.default_rng(7).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    served = tf.saved_model.load(report["saved_model"]).signatures["serving_images"](
        images=tf.constant(images))
    histogram = tf.function(lambda x: model(x, training=False))(
        tf.constant(images, tf.float32))["age_histogram"]
    expected = age_intervals.interval_outputs(histogram, knots)
    for name in ("age_low", "age_high", "age_std"):
        np.testing.assert_allclose(served[name].numpy(), expected[name].numpy(), atol=1e-2)
    assert labels.NUM_AGE_BINS == served["age_histogram"].shape[-1]
