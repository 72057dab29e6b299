"""Whether the age interval and the female probability mean what they say: one temperature
fitted on the validation split so that the central 80% interval holds 80% of the faces,
the share of test faces inside the 50%, 80% and 95% intervals before and after it (with
their mean widths, overall and by age decade), and the female probability's expected
calibration error with its reliability table.

The temperature rescales the age head's log-probabilities (agetf.modeling.age_intervals):
a model that is over-confident (too narrow intervals) gets T > 1. It is fitted on the
outputs the export gives, so with --test_time_flip on the flip-averaged ones, and saved as
interval_calibration.json in the run's folder; the SavedModel applies it (export with
temperature 1 where there is none). Report keys and lines: docs/evaluation.md.
"""

import dataclasses
import os
from typing import Optional

import numpy as np

from agetf.common.head_names import DEFAULT_INTERVAL
from agetf.modeling import age_intervals

CALIBRATION_FILE = "interval_calibration.json"  # in the run's folder
REPORTED_INTERVALS = (0.5, 0.8, 0.95)
ECE_BINS = 10  # equal-width bins of the female probability
# The temperature's search range, and bisection steps over its logarithm (2**-40 of it).
_MIN_TEMPERATURE, _MAX_TEMPERATURE, _STEPS = 0.05, 50.0, 40


@dataclasses.dataclass(frozen=True)
class IntervalCalibration:
    """A fitted temperature and what it was fitted on.

    Attributes:
      temperature: divides the age head's log-probabilities (1: unchanged).
      interval: the central interval it makes hold its share (0.8).
      head: the age head whose probabilities it rescales.
      split: the split it was fitted on.
      faces: how many faces of that split.
      test_time_flip: whether it was fitted on flip-averaged outputs (as the export gives).
      coverage_before: the share of those faces inside the interval at temperature 1.
      coverage_after: the share inside it at `temperature`.
    """

    temperature: float = 1.0
    interval: float = DEFAULT_INTERVAL
    head: Optional[str] = None
    split: str = "validation"
    faces: int = 0
    test_time_flip: bool = False
    coverage_before: Optional[float] = None
    coverage_after: Optional[float] = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def coverage(probabilities, true_ages, interval, temperature=1.0):
    """(share of faces whose true age lies in their central interval, mean width in years)."""
    calibrated = age_intervals.with_temperature(probabilities, temperature)
    low, high = (np.asarray(end, np.float64)
                 for end in age_intervals.central_interval(calibrated, interval))
    true_ages = np.asarray(true_ages, np.float64)
    inside = (low <= true_ages) & (true_ages <= high)
    return float(inside.mean()), float((high - low).mean())


def fit_temperature(probabilities, true_ages, interval=DEFAULT_INTERVAL) -> float:
    """The smallest temperature (within 0.05-50) whose central `interval` holds at least that
    share of the faces: coverage grows with the temperature, so bisection finds it."""
    low, high = np.log(_MIN_TEMPERATURE), np.log(_MAX_TEMPERATURE)

    def enough(log_temperature):
        return coverage(probabilities, true_ages, interval, np.exp(log_temperature))[0] >= interval

    if enough(low):
        return _MIN_TEMPERATURE
    if not enough(high):
        return _MAX_TEMPERATURE
    for _ in range(_STEPS):
        middle = (low + high) / 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return float(np.exp(high))


def fit(outputs, true_ages, *, interval=DEFAULT_INTERVAL, split="validation",
        test_time_flip=False) -> Optional[IntervalCalibration]:
    """The calibration of a split's model outputs (numpy, by head name) against its true
    ages; None for a model without a histogram or range head (no interval to calibrate)."""
    head = age_intervals.distribution_head(outputs)
    if head is None or not len(true_ages):
        return None
    probabilities = outputs[head]
    temperature = fit_temperature(probabilities, true_ages, interval)
    return IntervalCalibration(
        temperature=temperature, interval=interval, head=head, split=split,
        faces=int(len(true_ages)), test_time_flip=bool(test_time_flip),
        coverage_before=coverage(probabilities, true_ages, interval)[0],
        coverage_after=coverage(probabilities, true_ages, interval, temperature)[0])


def calibration_path(model_dir: str) -> str:
    return os.path.join(model_dir, CALIBRATION_FILE)


def interval_report(outputs, true_ages, temperature=1.0) -> Optional[dict]:
    """The age interval's section of the evaluation report: rows `all` and one per age
    decade, each with coverage_P_before/after and width_P_before/after for P in 50, 80, 95
    (before: temperature 1; after: `temperature`); None without a histogram or range head."""
    head = age_intervals.distribution_head(outputs)
    if head is None:
        return None
    probabilities, true_ages = np.asarray(outputs[head]), np.asarray(true_ages, np.float64)
    groups = [("all", np.ones(true_ages.shape, bool))] + _age_decades(true_ages)
    rows = []
    for name, mask in groups:
        if not mask.any():
            continue
        row = {"group": name, "count": int(mask.sum())}
        for interval in REPORTED_INTERVALS:
            percent = round(interval * 100)
            for when, used in (("before", 1.0), ("after", temperature)):
                share, width = coverage(probabilities[mask], true_ages[mask], interval, used)
                row[f"coverage_{percent}_{when}"] = share
                row[f"width_{percent}_{when}"] = width
        rows.append(row)
    return {"head": head, "temperature": float(temperature), "rows": rows}


def _age_decades(true_ages):
    decades = [(f"{d}-{d + 9}", (true_ages >= d) & (true_ages < d + 10)) for d in range(0, 80, 10)]
    return decades + [("80+", true_ages >= 80)]


def expected_calibration_error(female_probabilities, is_female, bins=ECE_BINS):
    """(ECE, reliability rows): over `bins` equal-width bins of the probability, the
    faces-weighted mean of |share of women - mean probability|; each row gives a non-empty
    bin's low and high edges, count, mean_probability and female_share."""
    probabilities = np.asarray(female_probabilities, np.float64)
    is_female = np.asarray(is_female, bool)
    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    rows, error = [], 0.0
    for number in range(bins):
        mask = index == number
        if not mask.any():
            continue
        mean_probability = float(probabilities[mask].mean())
        female_share = float(is_female[mask].mean())
        error += mask.sum() / probabilities.size * abs(female_share - mean_probability)
        rows.append({"low": number / bins, "high": (number + 1) / bins, "count": int(mask.sum()),
                     "mean_probability": mean_probability, "female_share": female_share})
    return float(error), rows


def exact_ages(batch_labels):
    """Which faces have an exact known age (not unknown, -1, nor a range of years): the
    faces an interval's coverage is counted on."""
    ages = np.asarray(batch_labels["age"])
    known = ages >= 0
    if "age_min" in batch_labels and "age_max" in batch_labels:
        known &= np.asarray(batch_labels["age_min"]) == np.asarray(batch_labels["age_max"])
    return known


def report_sections(outputs, batch_labels, temperature=1.0) -> dict:
    """The evaluation report's `age_interval` and `gender_calibration` sections, each where
    the model has the head, over the faces with an exact age and a known gender."""
    sections = {}
    aged = exact_ages(batch_labels)
    intervals = interval_report({head: np.asarray(value)[aged] for head, value in outputs.items()},
                                np.asarray(batch_labels["age"])[aged], temperature)
    if intervals is not None:
        sections["age_interval"] = intervals
    gendered = np.asarray(batch_labels["gender"]) >= 0
    if "gender" in outputs and gendered.any():
        error, rows = expected_calibration_error(np.asarray(outputs["gender"])[gendered],
                                                 np.asarray(batch_labels["gender"])[gendered] > 0.5)
        sections["gender_calibration"] = {"ece": error, "bins": ECE_BINS, "reliability": rows}
    return sections


def format_sections(report) -> list:
    """Terminal lines of the report's age_interval and gender_calibration sections."""
    lines = []
    section = report.get("age_interval")
    if section:
        lines.append(f"age interval ({section['head']}, temperature {section['temperature']:.3f}"
                     "): share of faces inside, before -> after calibration; 80% mean width")
        for row in section["rows"]:
            shares = "  ".join(
                f"{p}%: {row[f'coverage_{p}_before']:.3f} -> {row[f'coverage_{p}_after']:.3f}"
                for p in (round(i * 100) for i in REPORTED_INTERVALS))
            lines.append(f"  {row['group']:<6} n={row['count']:<5} {shares}  width "
                         f"{row['width_80_before']:.1f} -> {row['width_80_after']:.1f} years")
    if "gender_calibration" in report:
        lines.append("female probability: expected calibration error "
                     f"{report['gender_calibration']['ece']:.4f} ({ECE_BINS} bins)")
    return lines
