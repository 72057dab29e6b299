"""A run's calibration after training: the age interval's temperature fitted on the
validation split (agetf.evaluation.interval_calibration) and written beside the model as
interval_calibration.json, for the evaluation to report and the export to apply; and the
evaluation's calibration lines and gender reliability plot.

The fit uses the outputs the export will give (flip-averaged with --test_time_flip), over
every dataset's validation split, on the faces with an exact age.
"""

import os
from typing import Optional

import numpy as np

from agetf.evaluation import evaluator, interval_calibration
from agetf.modeling import age_intervals
from agetf.training import plots, run_files

RELIABILITY_PLOT = "gender_reliability.png"  # in plots/, beside training.png


def calibrate(model, config) -> Optional[interval_calibration.IntervalCalibration]:
    """Fits the age interval's temperature on the validation split, writes it to
    model_dir/interval_calibration.json and returns it; None for a model without a
    histogram or range head."""
    settings = config.evaluation
    inputs = ([input_config for _, input_config in config.input.for_each_dataset()]
              if config.input.mixed else [config.input])
    collected = [evaluator.predict_split(model, input_config, "validation", settings.batch_size,
                                         settings.flip_average)
                 for input_config in inputs]
    outputs = {head: np.concatenate([found[head] for found, _ in collected])
               for head in collected[0][0]}
    batch_labels = {key: np.concatenate([labelled[key] for _, labelled in collected])
                    for key in collected[0][1]}
    aged = interval_calibration.exact_ages(batch_labels)
    calibration = interval_calibration.fit(
        {head: value[aged] for head, value in outputs.items()}, batch_labels["age"][aged],
        test_time_flip=settings.flip_average)
    if calibration is None:
        return None
    run_files.write_json(interval_calibration.calibration_path(config.model_dir),
                         calibration.to_json())
    temperatures = ", ".join(f"{temperature:.2f} at {age:.0f}"
                             for age, temperature in calibration.knots)
    print(f"Age interval calibrated on {calibration.faces} validation faces: temperature "
          f"{temperatures} (by predicted age); the {calibration.interval:.0%} interval holds "
          f"{calibration.coverage_before:.1%} of them before, {calibration.coverage_after:.1%} "
          "after")
    return calibration


def knots_of(calibration) -> tuple:
    """The calibration's (predicted age, temperature) knots; temperature 1 (the model as it
    is) where there is none."""
    return age_intervals.NO_CALIBRATION if calibration is None else calibration.knots


def report_calibration(report, report_path) -> Optional[str]:
    """Prints the report's interval and gender calibration lines, and draws the gender
    reliability plot into plots/ beside the report (named after it: gender_reliability.png
    for evaluation.json, gender_reliability_ages_21_60.png for evaluation_ages_21_60.json).
    Returns the plot's path, or None without a gender head."""
    for line in interval_calibration.format_sections(report):
        print(line)
    section = report.get("gender_calibration")
    if section is None:
        return None
    suffix = os.path.splitext(os.path.basename(report_path))[0].removeprefix("evaluation")
    stem, extension = os.path.splitext(RELIABILITY_PLOT)
    path = os.path.join(os.path.dirname(report_path), "plots", stem + suffix + extension)
    plots.plot_reliability(section["reliability"], section["ece"], path)
    return path
