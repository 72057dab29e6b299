"""Which faces each head learns from and is scored on, and the targets of an age range.

A face's label may be an exact age, an inclusive range of ages (age_min < age_max), or
unknown (-1), and its gender known or unknown (-1); each face carries a sample weight
(agetf.data.schema). A head learns only from faces whose label it can use, so nothing trains
toward a made-up value:
- age_histogram and age_range: every face with a known age, exact or a range (the histogram
  is the range's in the records; the range head's target is the overlap below);
- age (regression): exact ages only. A range's middle would be a made-up value (an open
  "70+" would teach 85), so ranged faces are skipped;
- gender: faces with a known gender.
Batches without age_min, age_max or weight (labels built by hand, schema 1 dicts) read as
exact ages of weight 1.
"""

import numpy as np
import tensorflow as tf

from agetf.data import labels

_YEARS = np.arange(labels.NUM_AGE_BINS)
# [year, range class]: which of the 17 classes each year 0..100 falls in.
_YEAR_CLASSES = np.eye(labels.NUM_AGE_RANGES, dtype=np.float32)[labels.age_range(_YEARS)]


def age_bounds(batch_labels):
    """(age_min, age_max) as float32 [B]; the age itself where the batch has no bounds."""
    age = tf.cast(batch_labels["age"], tf.float32)
    return (tf.cast(batch_labels.get("age_min", age), tf.float32),
            tf.cast(batch_labels.get("age_max", age), tf.float32))


def age_known(batch_labels):
    """Faces whose age is known, exactly or as a range: bool [B]."""
    return age_bounds(batch_labels)[1] >= 0


def age_exact(batch_labels):
    """Faces whose age is known exactly: bool [B]."""
    age_min, age_max = age_bounds(batch_labels)
    return (age_max >= 0) & tf.equal(age_min, age_max)


def gender_known(batch_labels):
    """Faces whose gender is known: bool [B]."""
    return tf.cast(batch_labels["gender"], tf.float32) >= 0


def sample_weight(batch_labels):
    """Each face's sample weight, float32 [B]; 1.0 (a scalar) where the batch carries none."""
    if "weight" in batch_labels:
        return tf.cast(batch_labels["weight"], tf.float32)
    return tf.constant(1.0)


def head_masks(batch_labels):
    """{head: float32 [B], 1 where that head learns from and is scored on the face}, for the
    heads whose labels the batch carries (the age's for the three age heads; a Keras loss
    given one head's label alone gets no mask, and so no face is masked)."""
    masks = {}
    if "age" in batch_labels:
        age = tf.cast(age_known(batch_labels), tf.float32)
        masks.update(age_histogram=age, age_range=age,
                     age=tf.cast(age_exact(batch_labels), tf.float32))
    if "gender" in batch_labels:
        masks["gender"] = tf.cast(gender_known(batch_labels), tf.float32)
    return masks


def age_range_target(batch_labels):
    """The age_range head's target, float32 [B, 17]: the range's whole years spread uniformly
    over the classes they fall in (one-hot for an exact age; zeros for an unknown one)."""
    age_min, age_max = age_bounds(batch_labels)
    years = tf.constant(_YEARS, tf.float32)
    top = float(labels.MAX_AGE_BIN)
    inside = tf.cast((years >= tf.minimum(age_min, top)[:, tf.newaxis])
                     & (years <= tf.minimum(age_max, top)[:, tf.newaxis]), tf.float32)
    counts = tf.matmul(inside, tf.constant(_YEAR_CLASSES))
    return tf.math.divide_no_nan(counts, tf.reduce_sum(counts, axis=-1, keepdims=True))
