"""How sure an age is: central intervals, quantiles and spread read off an age head's
probabilities (the 101-bin histogram or the 17 ranges), after an optional temperature.

Each bin or range is taken as a uniform spread of age between its edges: bin k covers
k-0.5 to k+0.5 (clipped to 0-100), range k covers 5k to 5k+5 and 80+ covers 80 to 100.
The cumulative distribution is then piecewise linear over the edges, so quantiles and
interval ends are interpolated within a bin (fractions of a year, not whole years).
The spread (`std`) is the standard deviation of the bins' or ranges' centres (the range
midpoints of agetf.data.labels).

A temperature T rescales the log-probabilities (p_k proportional to p_k ** (1 / T)): T > 1
widens an over-confident distribution, T < 1 narrows it, T = 1 leaves it as it is. The
calibration (agetf.evaluation.interval_calibration) gives T as a function of the predicted
age: knots (predicted age, T), log T linear between them and constant beyond, as a model's
spread may grow too little with age. All functions are TensorFlow ops over a batch [n, K],
eager or traced.
"""

import numpy as np
import tensorflow as tf

from agetf.common.head_names import DEFAULT_INTERVAL
from agetf.data import labels

# The SavedModel's age_quantiles output: the quantiles at 0.5%, 1%, ..., 99.5%, so that any
# central interval at a whole percent lies on the grid (agetf.serving.predictors reads it).
QUANTILE_STEP = 0.005
QUANTILE_LEVELS = np.round(np.arange(1, 200) * QUANTILE_STEP, 6).astype(np.float32)
_TOP_AGE = float(labels.MAX_AGE_BIN)  # the last bin's and the 80+ range's upper edge
_HISTOGRAM_EDGES = np.clip(np.arange(labels.NUM_AGE_BINS + 1) - 0.5, 0.0, _TOP_AGE)
_RANGE_EDGES = np.array([labels.AGE_RANGE_WIDTH * k for k in range(labels.NUM_AGE_RANGES)]
                        + [_TOP_AGE])
_EDGES = {labels.NUM_AGE_BINS: _HISTOGRAM_EDGES, labels.NUM_AGE_RANGES: _RANGE_EDGES}
_CENTRES = {labels.NUM_AGE_BINS: np.arange(labels.NUM_AGE_BINS, dtype=np.float64),
            labels.NUM_AGE_RANGES: labels.AGE_RANGE_MIDPOINTS.astype(np.float64)}
NO_CALIBRATION = ((0.0, 1.0),)  # one knot: temperature 1 at every age


def distribution_head(outputs):
    """The age head whose probabilities give the interval (the histogram, else the ranges),
    or None for a model with neither (regression or gender only)."""
    return next((head for head in ("age_histogram", "age_range") if head in outputs), None)


def with_temperature(probabilities, temperature=1.0):
    """The probabilities [n, K] rescaled by a temperature (see the module docstring): one
    for all faces, or one per face [n]."""
    probabilities = tf.convert_to_tensor(probabilities, tf.float32)
    temperature = tf.cast(temperature, tf.float32)
    if temperature.shape.rank == 1:
        temperature = temperature[:, tf.newaxis]
    # log 0 is -inf, so a zero stays zero (a floor would grow into real mass at T > 1).
    logits = tf.math.log(probabilities) / temperature
    return tf.nn.softmax(logits, axis=-1)


def expected_age(probabilities):
    """Each distribution's mean age [n] over its bins' centres (the model's `age`)."""
    probabilities = tf.convert_to_tensor(probabilities, tf.float32)
    centres = tf.constant(_centres(probabilities.shape[-1]), tf.float32)
    return tf.reduce_sum(probabilities * centres, axis=-1)


def temperatures_at(ages, knots=NO_CALIBRATION):
    """The temperature [n] at each predicted age [n]: log T interpolated linearly between
    the knots ((age, T) pairs, ages rising), constant before the first and after the last."""
    ages = tf.convert_to_tensor(ages, tf.float32)
    knot_ages = tf.constant([age for age, _ in knots], tf.float32)
    logs = tf.constant([np.log(temperature) for _, temperature in knots], tf.float32)
    if len(knots) == 1:
        return tf.exp(tf.fill(tf.shape(ages), logs[0]))
    upper = tf.clip_by_value(tf.searchsorted(knot_ages[tf.newaxis], ages[tf.newaxis],
                                             side="right")[0], 1, len(knots) - 1)
    age_low, age_high = tf.gather(knot_ages, upper - 1), tf.gather(knot_ages, upper)
    weight = tf.clip_by_value((ages - age_low) / (age_high - age_low), 0.0, 1.0)
    return tf.exp(tf.gather(logs, upper - 1) * (1 - weight) + tf.gather(logs, upper) * weight)


def calibrated(probabilities, knots=NO_CALIBRATION):
    """The probabilities [n, K] rescaled by the temperature at each face's predicted age."""
    return with_temperature(probabilities, temperatures_at(expected_age(probabilities), knots))


def quantiles(probabilities, levels):
    """Ages [n, L] below which each face's distribution holds `levels` [L] of its mass.

    Raises:
      ValueError: for probabilities over neither 101 bins nor 17 ranges.
    """
    probabilities = tf.convert_to_tensor(probabilities, tf.float32)
    edges = tf.constant(_edges(probabilities.shape[-1]), tf.float32)
    cdf = tf.cumsum(probabilities, axis=-1)
    # The mass up to each edge, [n, K + 1], scaled to end at exactly 1.
    cdf = tf.concat([tf.zeros_like(cdf[:, :1]), cdf / cdf[:, -1:]], axis=-1)
    levels = tf.broadcast_to(tf.constant(levels, tf.float32),
                             [tf.shape(cdf)[0], len(np.atleast_1d(levels))])
    # The first edge at or past each level closes the bin that holds it.
    upper = tf.clip_by_value(tf.searchsorted(cdf, levels, side="left"), 1, edges.shape[0] - 1)
    cdf_low, cdf_high = (tf.gather(cdf, index, batch_dims=1) for index in (upper - 1, upper))
    edge_low, edge_high = tf.gather(edges, upper - 1), tf.gather(edges, upper)
    fraction = tf.clip_by_value(tf.math.divide_no_nan(levels - cdf_low, cdf_high - cdf_low),
                                0.0, 1.0)
    return edge_low + fraction * (edge_high - edge_low)


def central_interval(probabilities, interval=DEFAULT_INTERVAL):
    """(low, high), each [n]: the central interval holding `interval` of each distribution,
    from its (1 - interval) / 2 quantile to its (1 + interval) / 2 quantile."""
    ends = quantiles(probabilities, [(1.0 - interval) / 2.0, (1.0 + interval) / 2.0])
    return ends[:, 0], ends[:, 1]


def spread(probabilities):
    """The standard deviation in years [n] of each distribution over its bins' centres."""
    probabilities = tf.convert_to_tensor(probabilities, tf.float32)
    centres = tf.constant(_centres(probabilities.shape[-1]), tf.float32)
    mean = expected_age(probabilities)[:, tf.newaxis]
    variance = tf.reduce_sum(probabilities * (centres - mean) ** 2, axis=-1)
    return tf.sqrt(tf.maximum(variance, 0.0))


def interval_outputs(probabilities, knots=NO_CALIBRATION, interval=DEFAULT_INTERVAL) -> dict:
    """The export's interval outputs of one age head's probabilities: `age_low`, `age_high`
    (the central interval at `interval`), `age_std` and `age_quantiles` (at
    QUANTILE_LEVELS), all after the calibration's temperatures (`calibrated`)."""
    rescaled = calibrated(probabilities, knots)
    low, high = central_interval(rescaled, interval)
    return {"age_low": low, "age_high": high, "age_std": spread(rescaled),
            "age_quantiles": quantiles(rescaled, QUANTILE_LEVELS)}


def interval_from_quantiles(grid, interval):
    """(low, high) numpy arrays [n] of the central interval at `interval`, read from
    age_quantiles [n, len(QUANTILE_LEVELS)] (interpolated between the grid's levels)."""
    grid = np.asarray(grid, np.float64)
    # Every face shares the grid's levels, so one pair of weights serves the whole batch.
    ends = []
    for level in ((1.0 - interval) / 2.0, (1.0 + interval) / 2.0):
        position = np.interp(level, QUANTILE_LEVELS, np.arange(len(QUANTILE_LEVELS)))
        below = min(int(position), len(QUANTILE_LEVELS) - 2)
        weight = position - below
        ends.append((1.0 - weight) * grid[:, below] + weight * grid[:, below + 1])
    return ends[0], ends[1]


def _edges(count):
    if count not in _EDGES:
        raise ValueError(f"age probabilities over {count} classes: neither the "
                         f"{labels.NUM_AGE_BINS}-bin histogram nor the "
                         f"{labels.NUM_AGE_RANGES} ranges")
    return _EDGES[count]


def _centres(count):
    _edges(count)  # the same check
    return _CENTRES[count]
