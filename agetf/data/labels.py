"""Label encodings for age and gender, in numpy and TensorFlow versions that agree.

Age histogram: a discretized Gaussian over bins 0..100 (ages above 100 use the last
bin as mean), mass of bin k = Phi((k+0.5-age)/sigma) - Phi((k-0.5-age)/sigma),
renormalized to sum 1. Analytic and deterministic.
Age ranges: 17 classes, [0,5), [5,10), ..., [75,80), 80+.
An age range (min..max, inclusive): uniform over its whole years, then the same smoothing.
Regression: target age / 100.
Gender: 0 male, 1 female.
"""

import math

import numpy as np
import tensorflow as tf

from agetf import UsageError

NUM_AGE_BINS = 101  # bins 0..100
MAX_AGE_BIN = NUM_AGE_BINS - 1
NUM_AGE_RANGES = 17
AGE_RANGE_WIDTH = 5
REGRESSION_SCALE = 100.0
DEFAULT_AGE_DEVIATION = 5.0

# Midpoint of each range in years, used to read an age off a range prediction.
# 80+ has no upper edge; 85 is the median age of UTKFace's 80+ faces, close enough.
AGE_RANGE_MIDPOINTS = np.array(
    [AGE_RANGE_WIDTH * k + AGE_RANGE_WIDTH / 2 for k in range(NUM_AGE_RANGES - 1)] + [85.0],
    dtype=np.float32,
)
AGE_RANGE_NAMES = tuple(
    f"{AGE_RANGE_WIDTH * k}-{AGE_RANGE_WIDTH * (k + 1)}" for k in range(NUM_AGE_RANGES - 1)
) + (f"{AGE_RANGE_WIDTH * (NUM_AGE_RANGES - 1)}+",)
GENDER_NAMES = ("male", "female")

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _check_deviation(age_deviation):
    if not age_deviation > 0:
        raise UsageError(f"age_deviation must be > 0 years, got {age_deviation}")


def _histogram64(age, age_deviation):
    mean = min(float(age), MAX_AGE_BIN)
    edges = (np.arange(NUM_AGE_BINS + 1, dtype=np.float64) - 0.5 - mean) / age_deviation
    cdf = 0.5 * (1.0 + _erf(edges / math.sqrt(2.0)))
    mass = np.diff(cdf)
    return mass / mass.sum()


def age_histogram(age, age_deviation=DEFAULT_AGE_DEVIATION):
    """Returns the 101-bin float32 histogram of one age (numpy)."""
    _check_deviation(age_deviation)
    return _histogram64(age, age_deviation).astype(np.float32)


def range_histogram(age_min, age_max, age_deviation=DEFAULT_AGE_DEVIATION):
    """The 101-bin float32 histogram of an inclusive age range (numpy): the mean of
    age_histogram(y) for every whole year y in age_min..age_max (uniform over the range, then
    the same smoothing as one age). age_min == age_max gives age_histogram(age_min)."""
    _check_deviation(age_deviation)
    if not 0 <= age_min <= age_max:
        raise UsageError(f"age range {age_min}-{age_max} must have 0 <= min <= max")
    if age_min == age_max:
        return age_histogram(age_min, age_deviation)
    mass = np.mean([_histogram64(year, age_deviation)
                    for year in range(int(age_min), int(age_max) + 1)], axis=0)
    return (mass / mass.sum()).astype(np.float32)


def range_histogram_tf(age_min, age_max, age_deviation=DEFAULT_AGE_DEVIATION):
    """TensorFlow version of `range_histogram` for scalars or batches; bounds above 100 count
    as 100, and an unknown age (age_max < 0) gives all zeros."""
    _check_deviation(age_deviation)
    years = tf.range(NUM_AGE_BINS, dtype=tf.int64)
    lower = tf.minimum(tf.cast(age_min, tf.int64), MAX_AGE_BIN)[..., tf.newaxis]
    upper = tf.minimum(tf.cast(age_max, tf.int64), MAX_AGE_BIN)[..., tf.newaxis]
    inside = tf.cast((years >= lower) & (years <= upper), tf.float64)  # [..., year]
    per_year = tf.cast(age_histogram_tf(years, age_deviation), tf.float64)  # [year, bin]
    mass = tf.tensordot(inside, per_year, axes=[[-1], [0]])
    total = tf.reduce_sum(mass, axis=-1, keepdims=True)
    return tf.cast(tf.math.divide_no_nan(mass, total), tf.float32)


def age_histogram_tf(age, age_deviation=DEFAULT_AGE_DEVIATION):
    """TensorFlow version of `age_histogram`; `age` may be a scalar or a batch."""
    _check_deviation(age_deviation)
    age = tf.cast(age, tf.float64)
    mean = tf.minimum(age, float(MAX_AGE_BIN))[..., tf.newaxis]
    edges = (tf.range(NUM_AGE_BINS + 1, dtype=tf.float64) - 0.5 - mean) / age_deviation
    cdf = 0.5 * (1.0 + tf.math.erf(edges / math.sqrt(2.0)))
    mass = cdf[..., 1:] - cdf[..., :-1]
    return tf.cast(mass / tf.reduce_sum(mass, axis=-1, keepdims=True), tf.float32)


def age_range(age):
    """Returns the age-range class 0..16 of an age (numpy scalar or array)."""
    return np.minimum(np.asarray(age) // AGE_RANGE_WIDTH, NUM_AGE_RANGES - 1).astype(np.int64)


def age_range_tf(age):
    """TensorFlow version of `age_range`."""
    age = tf.cast(age, tf.int64)
    return tf.minimum(age // AGE_RANGE_WIDTH, NUM_AGE_RANGES - 1)


def regression_target(age):
    """Returns the regression target (age / 100)."""
    return np.asarray(age, dtype=np.float32) / REGRESSION_SCALE


def histogram_expectation(histogram):
    """Expected age in years of (a batch of) histograms: sum_k k * p_k (TensorFlow)."""
    bins = tf.range(NUM_AGE_BINS, dtype=histogram.dtype)
    return tf.reduce_sum(histogram * bins, axis=-1)


def range_expectation(probabilities):
    """Expected age in years of (a batch of) range probabilities, using range midpoints."""
    midpoints = tf.constant(AGE_RANGE_MIDPOINTS, dtype=probabilities.dtype)
    return tf.reduce_sum(probabilities * midpoints, axis=-1)
