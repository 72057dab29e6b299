"""One face's prediction in words: the gender rule, and the per-face lines that evaluation,
agetf.predict (face crops and photos) and --annotate's captions print, in one place.

The gender rule: female where the female probability is over 0.5, male at 0.5 and below.
That is the rule of Keras' binary accuracy and of this project's gender_accuracy
(agetf.modeling.heads, agetf.evaluation.evaluator), so a line never names another gender
than the accuracy beside it counts.
"""

import numpy as np

from agetf.common.head_names import DEFAULT_INTERVAL
from agetf.data import labels

FEMALE_ABOVE = 0.5  # a female probability over this is a female face; 0.5 itself is male


def predicted_gender(female_probability):
    """1 (female) where the probability is over 0.5, else 0 (male): an int for a number, an
    int64 array for an array."""
    genders = (np.asarray(female_probability) > FEMALE_ABOVE).astype(np.int64)
    return int(genders) if genders.ndim == 0 else genders


def gender_name(female_probability) -> str:
    """'female' or 'male' (predicted_gender) for one probability."""
    return labels.GENDER_NAMES[predicted_gender(female_probability)]


def age_range_name(age_range) -> str:
    """The label of an age-range class: '25-30', ..., '80+'."""
    return labels.AGE_RANGE_NAMES[int(age_range)]


def interval_name(interval) -> str:
    """'80% interval' for 0.8: the central age interval's name in printed lines."""
    return f"{interval * 100:g}% interval"


def face_lines(age=None, age_range=None, female_probability=None, true_age=None,
               true_gender=None, show_probability=True, age_low=None, age_high=None,
               age_std=None, interval=DEFAULT_INTERVAL) -> list:
    """The older project's lines for one face crop, after its `Predicting for image` line:
    age, range and gender, each where predicted, with the true label where known (the true
    range is that of the true age; true_age may be an (age_min, age_max) pair, printed as
    '30-39' where the label is a range); show_probability adds (p_female=0.87) to the gender.
    Last, where predicted, the central age interval (`interval` of the distribution) and the
    spread: 'Age 80% interval: 28.3-43.0, std 5.2'."""
    lines = []
    true_min, true_max = true_age if isinstance(true_age, tuple) else (true_age, true_age)
    if age is not None:
        true = "" if true_min is None else f", true age: {int(true_min)}"
        lines.append(f"Predicted age: {age:.1f}"
                     + (true if true_min == true_max else f"{true}-{int(true_max)}"))
    if age_range is not None:
        line = f"Predicted range: {age_range_name(age_range)}"
        if true_min is not None and true_min == true_max:
            line += f", true range: {age_range_name(labels.age_range(int(true_min)))}"
        lines.append(line)
    if female_probability is not None:
        line = f"Predicted gender: {gender_name(female_probability)}"
        if show_probability:
            line += f" (p_female={female_probability:.2f})"
        if true_gender is not None:
            line += f", true gender: {labels.GENDER_NAMES[int(true_gender)]}"
        lines.append(line)
    if age_low is not None and age_high is not None:
        line = f"Age {interval_name(interval)}: {age_low:.1f}-{age_high:.1f}"
        lines.append(line + ("" if age_std is None else f", std {age_std:.1f}"))
    return lines


def photo_face_line(number, box, age=None, age_range=None, female_probability=None,
                    age_low=None, age_high=None, interval=DEFAULT_INTERVAL) -> str:
    """A photo's line for its face `number` (from 1) at `box` (in the photo's pixels); the
    age carries its central interval where predicted: 'predicted age 35.1 (80% interval
    28.3-43.0)'."""
    parts = [] if age is None else [f"predicted age {age:.1f}"]
    if parts and age_low is not None and age_high is not None:
        parts[0] += f" ({interval_name(interval)} {age_low:.1f}-{age_high:.1f})"
    if age_range is not None:
        parts.append(f"range {age_range_name(age_range)}")
    if female_probability is not None:
        parts.append(f"gender {gender_name(female_probability)} "
                     f"(p_female={female_probability:.2f})")
    return (f"Face {number} at x={box.left} y={box.top} w={box.width} h={box.height}: "
            + ", ".join(parts))


def face_caption(age=None, female_probability=None) -> str:
    """A short label drawn above a face: age, and gender where predicted."""
    parts = [] if age is None else [f"{age:.0f}"]
    if female_probability is not None:
        parts.append(gender_name(female_probability))
    return " ".join(parts)


def grid_caption(true_age, true_female, age=None, age_range=None, female_probability=None):
    """The two-line caption of a face in TensorBoard's validation grid: 'true 34 F' over
    'pred 33 30-35 F', each part where the model predicts it."""
    predicted = [] if age is None else [f"{age:.0f}"]
    if age_range is not None:
        predicted.append(age_range_name(age_range))
    if female_probability is not None:
        predicted.append("F" if predicted_gender(female_probability) else "M")
    truth = "F" if predicted_gender(true_female) else "M"
    return f"true {int(true_age)} {truth}\npred " + " ".join(predicted)
