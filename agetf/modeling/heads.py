"""The prediction heads: which exist, their losses, and their metrics in human units.

Labels and model outputs share head names. Labels always carry the true age in
years under `age`; the regression head's output `age` is age / 100.

The names and checks at the top need no TensorFlow, which the functions below import
when called: `agetf.train` checks its flags with them before TensorFlow starts.
"""

from agetf import UsageError

HEADS = ("age_histogram", "age_range", "age", "gender")
AGE_HEADS = ("age_histogram", "age_range", "age")  # heads an age in years can be read from
CS_THRESHOLD_YEARS = 5.0
_EPSILON = 1e-7


def select_heads(task_type, range_mode=False, predict_gender=False):
    """Maps the older project's flags to head names (`--type`, `--range_mode`, `--predict_gender`)."""
    if task_type == "classification":
        heads = ["age_range" if range_mode else "age_histogram"]
    elif task_type == "regression":
        if range_mode:
            raise UsageError("--range_mode applies to --type=classification only; drop it or use "
                             "--type=classification")
        heads = ["age"]
    else:
        raise UsageError(f"--type must be classification or regression, got {task_type!r}")
    if predict_gender:
        heads.append("gender")
    return tuple(heads)


def validate_heads(heads):
    """Raises UsageError unless `heads` is a non-empty subset of HEADS without repeats."""
    if isinstance(heads, str):
        heads = [heads]
    unknown = [h for h in heads if h not in HEADS]
    if unknown or not heads or len(set(heads)) != len(heads):
        raise UsageError(f"--heads must be a non-empty list of distinct names from "
                         f"{', '.join(HEADS)}; got {list(heads)}")


def in_canonical_order(heads):
    """`heads` in HEADS order (names not in HEADS last, as given): the order the model's
    outputs are built in, so two lists of the same heads define the same model."""
    return tuple(sorted(heads, key=lambda h: HEADS.index(h) if h in HEADS else len(HEADS)))


def emd_loss(histogram_true, histogram_pred, r=2.0):
    """Per-example earth mover's distance between histograms (NIMA, on cumulative sums)."""
    import tensorflow as tf

    cdf_true = tf.cumsum(histogram_true, axis=-1)
    cdf_pred = tf.cumsum(histogram_pred, axis=-1)
    return tf.reduce_mean(tf.abs(cdf_true - cdf_pred) ** r, axis=-1) ** (1.0 / r)


def per_example_losses(batch_labels, outputs, regression_loss="mse"):
    """Returns {head: float32 [B] loss} for every head present in `outputs`."""
    import keras
    import tensorflow as tf

    from agetf.data import labels

    losses = {}
    if "age_histogram" in outputs:
        losses["age_histogram"] = emd_loss(batch_labels["age_histogram"], outputs["age_histogram"])
    if "age_range" in outputs:
        losses["age_range"] = keras.losses.sparse_categorical_crossentropy(
            batch_labels["age_range"], outputs["age_range"])
    if "age" in outputs:
        target = tf.cast(batch_labels["age"], tf.float32) / labels.REGRESSION_SCALE
        error = outputs["age"] - target
        if regression_loss == "huber":
            # delta 0.1 = 10 years: quadratic near the target, linear for outliers.
            losses["age"] = tf.where(tf.abs(error) <= 0.1, 0.5 * error**2, 0.1 * (tf.abs(error) - 0.05))
        else:
            losses["age"] = error**2
    if "gender" in outputs:
        p = tf.clip_by_value(outputs["gender"], _EPSILON, 1.0 - _EPSILON)
        y = batch_labels["gender"]
        losses["gender"] = -(y * tf.math.log(p) + (1.0 - y) * tf.math.log(1.0 - p))
    return {head: tf.cast(loss, tf.float32) for head, loss in losses.items()}


def total_loss(per_head, loss_weights=None):
    """Weighted sum of per-example head losses (weight 1 for heads not in `loss_weights`)."""
    import tensorflow as tf

    loss_weights = loss_weights or {}
    return tf.add_n([loss_weights.get(head, 1.0) * loss for head, loss in per_head.items()])


def age_years_by_head(outputs):
    """Predicted age in years from each age head present: {head: float32 [B]}; a regression
    age is clipped to 0-MAX_AGE (a face is never -3 years old)."""
    import tensorflow as tf

    from agetf.data import labels
    from agetf.data.names import MAX_AGE

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


def metric_names(heads):
    """Names of the metrics a MetricSet for `heads` reports, in display order."""
    names = ["loss"] + [f"{head}_loss" for head in heads]
    age_heads = [h for h in AGE_HEADS if h in heads]
    if age_heads:
        names += ["mae", "cs5"]
    if len(age_heads) > 1:
        names += [f"{head}_mae" for head in age_heads]
    if "age_range" in heads:
        names.append("age_range_accuracy")
    if "gender" in heads:
        names.append("gender_accuracy")
    return names


def lower_is_better(metric_name):
    """Whether a smaller value of this metric is better (losses and MAE) or larger (accuracy, CS@5)."""
    return metric_name.removeprefix("val_").endswith(("loss", "mae"))


class MetricSet:
    """Streaming means of every loss and metric, safe to update inside `strategy.run`.

    Create it inside `strategy.scope()`; Keras metric variables sync on read, so
    `results()` in cross-replica context sums over replicas and workers.
    """

    def __init__(self, heads, prefix=""):
        import keras

        self.heads = tuple(heads)
        self._means = {name: keras.metrics.Mean(name=prefix + name) for name in metric_names(heads)}

    def update(self, batch_labels, outputs, per_head, loss_weights=None):
        """Adds one (per-replica) batch to every metric."""
        import tensorflow as tf

        self._means["loss"].update_state(total_loss(per_head, loss_weights))
        for head, loss in per_head.items():
            self._means[f"{head}_loss"].update_state(loss)
        true_age = tf.cast(batch_labels["age"], tf.float32)
        years = age_years_by_head(outputs)
        if years:
            error = tf.abs(_preferred_age(years) - true_age)
            self._means["mae"].update_state(error)
            self._means["cs5"].update_state(tf.cast(error <= CS_THRESHOLD_YEARS, tf.float32))
            if len(years) > 1:
                for head, head_years in years.items():
                    self._means[f"{head}_mae"].update_state(tf.abs(head_years - true_age))
        if "age_range" in outputs:
            predicted = tf.argmax(outputs["age_range"], axis=-1, output_type=tf.int32)
            hit = tf.equal(predicted, tf.cast(batch_labels["age_range"], tf.int32))
            self._means["age_range_accuracy"].update_state(tf.cast(hit, tf.float32))
        if "gender" in outputs:
            hit = tf.equal(outputs["gender"] > 0.5, batch_labels["gender"] > 0.5)
            self._means["gender_accuracy"].update_state(tf.cast(hit, tf.float32))

    def results(self):
        """{name: python float} of every metric."""
        return {name: float(mean.result()) for name, mean in self._means.items()}

    def reset(self):
        for mean in self._means.values():
            mean.reset_state()
