"""Scoring faces whose age is a range, and which faces each number counts (numpy).

MAE, CS@5 and the age-range accuracy count exact ages only, gender accuracy known genders
only. A face whose age is a range ("30-39", "70+" stored as 70-100) is scored by whether
the predicted age lies inside the range and by its distance to the range (0 inside), each
beside the constant predictor (the training set's median age), as MAE is.
"""

import numpy as np


def label_kinds(batch_labels):
    """Boolean masks over the faces: exact ages, age ranges, known genders. Labels without
    age_min and age_max (schema 1) are exact ages."""
    age = np.asarray(batch_labels["age"])
    age_min = np.asarray(batch_labels.get("age_min", age))
    age_max = np.asarray(batch_labels.get("age_max", age))
    known = age_max >= 0
    return {"exact": known & (age_min == age_max), "range": known & (age_min != age_max),
            "gender_known": np.asarray(batch_labels["gender"]) >= 0}


def label_counts(kinds):
    """How many faces have an exact age, a range, no age, and no gender."""
    exact, ranged = kinds["exact"], kinds["range"]
    return {"exact_age": int(exact.sum()), "age_range": int(ranged.sum()),
            "unknown_age": int((~exact & ~ranged).sum()),
            "unknown_gender": int((~kinds["gender_known"]).sum())}


def distance_to_range(predicted, age_min, age_max):
    """Years from each predicted age to its range [age_min, age_max]; 0 inside."""
    predicted = np.asarray(predicted, np.float64)
    return np.maximum(np.maximum(age_min - predicted, predicted - age_max), 0.0)


def range_scores(predicted, age_min, age_max):
    """{inside: share of predictions inside their range, mean_distance: years to it}."""
    distance = distance_to_range(predicted, np.asarray(age_min, np.float64),
                                 np.asarray(age_max, np.float64))
    return {"inside": float(np.mean(distance == 0)), "mean_distance": float(np.mean(distance))}


def range_report(predicted_age, batch_labels, constant_age, kinds):
    """The report's `age_ranges` section: the ranged faces' count and scores, the constant
    predictor's beside them; None when no face has a range or the model no age head."""
    ranged = kinds["range"]
    if predicted_age is None or not ranged.any():
        return None
    age_min = np.asarray(batch_labels["age_min"])[ranged]
    age_max = np.asarray(batch_labels["age_max"])[ranged]
    return {"count": int(ranged.sum()),
            **range_scores(np.asarray(predicted_age)[ranged], age_min, age_max),
            "constant": range_scores(np.full(age_min.shape, constant_age), age_min, age_max)}


def format_range_report(section):
    """The terminal lines of an `age_ranges` section."""
    constant = section["constant"]
    return [f"age ranges ({section['count']} faces): inside {section['inside']:.3f} "
            f"(constant {constant['inside']:.3f}), mean distance "
            f"{section['mean_distance']:.2f} years (constant {constant['mean_distance']:.2f})"]
