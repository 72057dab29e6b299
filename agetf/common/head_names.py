"""The prediction heads' vocabulary: their names, the metrics each reports, and the heads the
older project's flags imply. No TensorFlow: the configs check flags with it before TensorFlow
starts, and data, modeling and training share it from here.

Labels and model outputs share head names.
"""

from agetf import UsageError

HEADS = ("age_histogram", "age_range", "age", "gender")
AGE_HEADS = ("age_histogram", "age_range", "age")  # heads an age in years can be read from
# The central age interval's probability (agetf.modeling.age_intervals): what calibration
# fits and agetf.predict --interval gives by default.
DEFAULT_INTERVAL = 0.8


def select_heads(task_type, range_mode=False, predict_gender=False):
    """Maps the older project's flags to head names (`--type`, `--range_mode`,
    `--predict_gender`)."""
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
    """Whether a smaller value of this metric is better (losses and MAE) or larger
    (accuracy, CS@5)."""
    return metric_name.removeprefix("val_").endswith(("loss", "mae"))
