"""Label encodings: the analytic age histogram, ranges, and numpy/TF agreement."""

import numpy as np
import pytest
import tensorflow as tf

from agetf.data import labels


@pytest.mark.parametrize("age", [0, 1, 30, 99, 100, 116])
@pytest.mark.parametrize("deviation", [1.0, 5.0, 10.0])
def test_histogram_is_a_distribution_and_tf_agrees(age, deviation):
    hist = labels.age_histogram(age, deviation)
    assert hist.shape == (101,) and hist.dtype == np.float32
    assert np.all(hist >= 0)
    np.testing.assert_allclose(hist.sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(labels.age_histogram_tf(age, deviation).numpy(), hist, atol=1e-6)


@pytest.mark.parametrize("age,deviation", [(30, 5.0), (50, 10.0), (20, 1.0), (3, 1.0)])
def test_expectation_equals_age_away_from_edges(age, deviation):
    hist = labels.age_histogram(age, deviation)
    assert np.dot(hist, np.arange(101)) == pytest.approx(age, abs=1e-3)
    assert labels.histogram_expectation(tf.constant(hist)).numpy() == pytest.approx(age, abs=1e-3)


def test_histogram_peaks_at_age_and_is_symmetric():
    hist = labels.age_histogram(40, 5.0)
    assert np.argmax(hist) == 40
    np.testing.assert_allclose(hist[35], hist[45], rtol=1e-6)


def test_edges_clip_into_range():
    # Age 0 loses the left tail to renormalization, so its expectation moves right.
    assert np.dot(labels.age_histogram(0, 5.0), np.arange(101)) > 0.5
    # Ages above 100 use the last bin as their mean.
    np.testing.assert_array_equal(labels.age_histogram(116), labels.age_histogram(100))
    assert np.argmax(labels.age_histogram(116)) == 100


def test_histogram_is_deterministic():
    np.testing.assert_array_equal(labels.age_histogram(27.0), labels.age_histogram(27.0))


def test_bad_deviation_is_refused():
    with pytest.raises(ValueError, match="age_deviation"):
        labels.age_histogram(20, 0.0)


def test_batched_tf_histogram_matches_numpy_rows():
    ages = np.array([0, 1, 25, 99, 100, 116])
    batch = labels.age_histogram_tf(tf.constant(ages), 3.0).numpy()
    for row, age in zip(batch, ages):
        np.testing.assert_allclose(row, labels.age_histogram(age, 3.0), atol=1e-6)


@pytest.mark.parametrize("age,expected", [(0, 0), (4, 0), (5, 1), (79, 15), (80, 16), (116, 16)])
def test_age_range(age, expected):
    assert labels.age_range(age) == expected
    assert labels.age_range_tf(age).numpy() == expected


def test_range_names_and_midpoints():
    assert len(labels.AGE_RANGE_NAMES) == 17 == len(labels.AGE_RANGE_MIDPOINTS)
    assert labels.AGE_RANGE_NAMES[0] == "0-5" and labels.AGE_RANGE_NAMES[-1] == "80+"
    one_hot = tf.one_hot([3], 17)
    assert labels.range_expectation(one_hot).numpy()[0] == pytest.approx(17.5)


def test_regression_target():
    np.testing.assert_allclose(labels.regression_target([0, 50, 116]), [0.0, 0.5, 1.16])
