"""The age interval read off an age head's probabilities: quantiles, central intervals,
spread and temperature (agetf.modeling.age_intervals), eagerly and inside tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from agetf.data import labels
from agetf.modeling import age_intervals
from agetf.serving import signatures


def histograms(*ages_and_deviations):
    return np.stack([labels.age_histogram(age, deviation)
                     for age, deviation in ages_and_deviations]).astype(np.float32)


def test_a_gaussian_histograms_interval_is_its_mean_plus_minus_1_28_deviations():
    low, high = age_intervals.central_interval(histograms((30, 5), (60, 10)), 0.8)
    z = 1.2815516  # the standard normal's 90% quantile
    np.testing.assert_allclose(low, [30 - z * 5, 60 - z * 10], atol=0.05)
    np.testing.assert_allclose(high, [30 + z * 5, 60 + z * 10], atol=0.05)


def test_the_interval_is_ordered_holds_the_median_and_grows_with_its_share():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.full(labels.NUM_AGE_BINS, 0.3), size=20).astype(np.float32)
    median = age_intervals.quantiles(probabilities, [0.5]).numpy()[:, 0]
    previous = None
    for share in (0.2, 0.5, 0.8, 0.95):
        low, high = (end.numpy() for end in age_intervals.central_interval(probabilities, share))
        assert (low <= median).all() and (median <= high).all() and (low < high).all()
        assert (0 <= low).all() and (high <= labels.MAX_AGE_BIN).all()
        if previous is not None:
            assert (high - low >= previous - 1e-4).all()
        previous = high - low


def test_a_narrow_histogram_gives_a_narrow_interval_and_spread():
    narrow, wide = histograms((2, 1), (45, 8))
    low, high = age_intervals.central_interval(np.stack([narrow, wide]), 0.8)
    widths = (high - low).numpy()
    assert widths[0] < 3.0 < 15.0 < widths[1]
    spreads = age_intervals.spread(np.stack([narrow, wide])).numpy()
    np.testing.assert_allclose(spreads, [1.0, 8.0], rtol=0.05)


def test_ranges_interval_runs_over_the_range_edges():
    probabilities = np.zeros((2, labels.NUM_AGE_RANGES), np.float32)
    probabilities[0, 6] = 1.0  # all in 30-35
    probabilities[1, [6, 7]] = 0.5  # half in 30-35, half in 35-40
    low, high = age_intervals.central_interval(probabilities, 0.8)
    np.testing.assert_allclose(low, [30.5, 31.0], atol=1e-5)
    np.testing.assert_allclose(high, [34.5, 39.0], atol=1e-5)


def test_other_class_counts_are_refused():
    with pytest.raises(ValueError, match="neither the 101-bin histogram nor the 17 ranges"):
        age_intervals.central_interval(np.full((1, 10), 0.1, np.float32))


def test_temperature_above_one_widens_below_one_narrows_one_keeps():
    probabilities = histograms((30, 5))
    widths = {}
    for temperature in (0.5, 1.0, 2.0):
        low, high = age_intervals.central_interval(
            age_intervals.with_temperature(probabilities, temperature), 0.8)
        widths[temperature] = float(high[0] - low[0])
    assert widths[0.5] < widths[1.0] < widths[2.0]
    np.testing.assert_allclose(age_intervals.with_temperature(probabilities, 1.0),
                               probabilities, atol=1e-6)
    # A Gaussian's log-density over T is a Gaussian sqrt(T) times as wide.
    assert widths[2.0] == pytest.approx(widths[1.0] * np.sqrt(2.0), rel=0.02)


def test_tf_data_and_eager_give_the_same_outputs():
    probabilities = histograms((10, 3), (50, 6), (80, 9))
    knots = ((20.0, 0.8), (60.0, 1.5))
    eager = age_intervals.interval_outputs(probabilities, knots, 0.8)
    traced = next(iter(tf.data.Dataset.from_tensor_slices(probabilities).batch(3).map(
        lambda p: age_intervals.interval_outputs(p, knots, 0.8))))
    assert sorted(eager) == sorted(signatures.INTERVAL_OUTPUTS)
    for name in eager:
        np.testing.assert_allclose(traced[name], eager[name], atol=1e-5, err_msg=name)
    assert eager["age_quantiles"].shape == (3, len(age_intervals.QUANTILE_LEVELS))


@pytest.mark.parametrize("share", [0.5, 0.8, 0.95, 0.9, 0.37])
def test_the_quantile_grid_gives_the_central_interval(share):
    probabilities = histograms((3, 1), (33, 5), (70, 12))
    outputs = age_intervals.interval_outputs(probabilities, interval=share)
    low, high = age_intervals.interval_from_quantiles(outputs["age_quantiles"].numpy(), share)
    direct_low, direct_high = age_intervals.central_interval(probabilities, share)
    # On the grid (whole percents) exactly; between its levels within a tenth of a year.
    on_grid = round(share * 100) == share * 100
    tolerance = 1e-4 if on_grid else 0.1
    np.testing.assert_allclose(low, direct_low, atol=tolerance)
    np.testing.assert_allclose(high, direct_high, atol=tolerance)


def test_temperatures_interpolate_their_logarithm_between_knots_and_hold_beyond():
    knots = ((10.0, 0.5), (30.0, 2.0), (70.0, 4.0))
    ages = np.array([0.0, 10.0, 20.0, 30.0, 50.0, 70.0, 95.0], np.float32)
    got = age_intervals.temperatures_at(ages, knots).numpy()
    np.testing.assert_allclose(got, [0.5, 0.5, 1.0, 2.0, np.sqrt(8.0), 4.0, 4.0], rtol=1e-5)
    np.testing.assert_allclose(age_intervals.temperatures_at(ages).numpy(), 1.0)
    traced = tf.function(lambda a: age_intervals.temperatures_at(a, knots))(ages)
    np.testing.assert_allclose(traced, got, rtol=1e-6)


def test_each_face_gets_the_temperature_of_its_predicted_age():
    probabilities = histograms((10, 4), (70, 4))
    rescaled = age_intervals.calibrated(probabilities, ((10.0, 1.0), (70.0, 4.0)))
    spreads = age_intervals.spread(rescaled).numpy()
    # The young face keeps its width; the old one's doubles (a Gaussian's grows as sqrt(T)).
    np.testing.assert_allclose(spreads, [4.0, 8.0], rtol=0.05)
    one = age_intervals.with_temperature(probabilities, np.array([1.0, 4.0]))
    np.testing.assert_allclose(one, rescaled, atol=1e-4)  # the young face's mean is 10.0x
