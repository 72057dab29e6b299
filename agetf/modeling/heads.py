"""The prediction heads: which exist, their losses, and their metrics in human units.

Labels and model outputs share head names. Labels always carry the true age in
years under `age`; the regression head's output `age` is age / 100.

The heads' names and metric names, which need no TensorFlow, are in agetf.common.head_names.
"""

import keras
import tensorflow as tf

from agetf.common.head_names import AGE_HEADS, metric_names
from agetf.data import labels
from agetf.data.names import MAX_AGE
from agetf.modeling import label_masks

CS_THRESHOLD_YEARS = 5.0
_EPSILON = 1e-7


def emd_loss(histogram_true, histogram_pred, r=2.0):
    """Per-example earth mover's distance between histograms (NIMA, on cumulative sums)."""
    cdf_true = tf.cumsum(histogram_true, axis=-1)
    cdf_pred = tf.cumsum(histogram_pred, axis=-1)
    return tf.reduce_mean(tf.abs(cdf_true - cdf_pred) ** r, axis=-1) ** (1.0 / r)


def per_example_losses(batch_labels, outputs, regression_loss="mse"):
    """Returns {head: float32 [B] loss} for every head present in `outputs`: each face's loss
    times its sample weight, and 0 where the head has no label for the face
    (agetf.modeling.label_masks: an unknown age or gender, a range for regression)."""
    losses = {}
    if "age_histogram" in outputs:
        losses["age_histogram"] = emd_loss(batch_labels["age_histogram"], outputs["age_histogram"])
    if "age_range" in outputs:
        # Cross-entropy with the range's overlap of the classes: the usual one for an exact age.
        losses["age_range"] = keras.losses.categorical_crossentropy(
            label_masks.age_range_target(batch_labels), outputs["age_range"])
    if "age" in outputs:
        target = tf.cast(batch_labels["age"], tf.float32) / labels.REGRESSION_SCALE
        error = outputs["age"] - target
        if regression_loss == "huber":
            # delta 0.1 = 10 years: quadratic near the target, linear for outliers.
            losses["age"] = tf.where(tf.abs(error) <= 0.1, 0.5 * error**2,
                                     0.1 * (tf.abs(error) - 0.05))
        else:
            losses["age"] = error**2
    if "gender" in outputs:
        p = tf.clip_by_value(outputs["gender"], _EPSILON, 1.0 - _EPSILON)
        y = tf.maximum(tf.cast(batch_labels["gender"], p.dtype), 0.0)  # unknown (-1): masked
        losses["gender"] = -(y * tf.math.log(p) + (1.0 - y) * tf.math.log(1.0 - p))
    masks, weight = label_masks.head_masks(batch_labels), label_masks.sample_weight(batch_labels)
    return {head: tf.cast(loss, tf.float32) * masks.get(head, 1.0) * weight
            for head, loss in losses.items()}


def total_loss(per_head, loss_weights=None):
    """Weighted sum of per-example head losses (weight 1 for heads not in `loss_weights`)."""
    loss_weights = loss_weights or {}
    return tf.add_n([loss_weights.get(head, 1.0) * loss for head, loss in per_head.items()])


def age_years_by_head(outputs):
    """Predicted age in years from each age head present: {head: float32 [B]}; a regression
    age is clipped to 0-MAX_AGE (a face is never -3 years old)."""
    years = {}
    if "age_histogram" in outputs:
        years["age_histogram"] = labels.histogram_expectation(outputs["age_histogram"])
    if "age_range" in outputs:
        years["age_range"] = labels.range_expectation(outputs["age_range"])
    if "age" in outputs:
        # Regression is unbounded; the other heads' ages lie within 0-100 by construction.
        years["age"] = tf.clip_by_value(outputs["age"] * labels.REGRESSION_SCALE, 0.0,
                                        float(MAX_AGE))
    return years


def predicted_age_years(outputs):
    """The model's age in years: histogram expectation, else range expectation, else
    regression; None for a model without an age head (gender only)."""
    return _preferred_age(age_years_by_head(outputs))


def _preferred_age(years_by_head):
    return next((years_by_head[head] for head in AGE_HEADS if head in years_by_head), None)


class MetricSet:
    """Streaming means of every loss and metric, safe to update inside `strategy.run`.

    Create it inside `strategy.scope()`; Keras metric variables sync on read, so
    `results()` in cross-replica context sums over replicas and workers.
    """

    def __init__(self, heads, prefix=""):
        self.heads = tuple(heads)
        self._means = {name: keras.metrics.Mean(name=prefix + name) for name in metric_names(heads)}

    def update(self, batch_labels, outputs, per_head, loss_weights=None):
        """Adds one (per-replica) batch to every metric. A head's loss is averaged over the
        faces it learns from; MAE, CS@5 and range accuracy count exact ages only, gender
        accuracy known genders only (agetf.modeling.label_masks)."""
        self._means["loss"].update_state(total_loss(per_head, loss_weights))
        masks = label_masks.head_masks(batch_labels)
        for head, loss in per_head.items():
            self._means[f"{head}_loss"].update_state(loss, sample_weight=masks[head])
        true_age = tf.cast(batch_labels["age"], tf.float32)
        exact = masks["age"]
        years = age_years_by_head(outputs)
        if years:
            error = tf.abs(_preferred_age(years) - true_age)
            self._means["mae"].update_state(error, sample_weight=exact)
            self._means["cs5"].update_state(tf.cast(error <= CS_THRESHOLD_YEARS, tf.float32),
                                            sample_weight=exact)
            if len(years) > 1:
                for head, head_years in years.items():
                    self._means[f"{head}_mae"].update_state(tf.abs(head_years - true_age),
                                                            sample_weight=exact)
        if "age_range" in outputs:
            predicted = tf.argmax(outputs["age_range"], axis=-1, output_type=tf.int32)
            hit = tf.equal(predicted, tf.cast(batch_labels["age_range"], tf.int32))
            self._means["age_range_accuracy"].update_state(tf.cast(hit, tf.float32),
                                                           sample_weight=exact)
        if "gender" in outputs:
            hit = tf.equal(outputs["gender"] > 0.5, batch_labels["gender"] > 0.5)
            self._means["gender_accuracy"].update_state(tf.cast(hit, tf.float32),
                                                        sample_weight=masks["gender"])

    def results(self):
        """{name: python float} of every metric."""
        return {name: float(mean.result()) for name, mean in self._means.items()}

    def reset(self):
        for mean in self._means.values():
            mean.reset_state()
