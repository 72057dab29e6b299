"""Evaluating a trained model on a split: per-image lines, summary metrics, breakdowns.

Everything is in human units (years, shares) and sits beside the constant predictor
(the training set's median age, the majority gender), so a number means something.
"""

import numpy as np
import tensorflow as tf

from agetf import UsageError
from agetf.common import progress
from agetf.config import EVAL_PROTOCOLS
from agetf.data import input_pipeline, labels, names, schema
from agetf.evaluation import interval_calibration, prediction_text, range_metrics
from agetf.modeling import age_intervals, heads
from agetf.modeling import model as model_lib
from agetf.modeling import outputs as model_outputs

RACE_NAMES = {0: "white", 1: "black", 2: "asian", 3: "indian", 4: "other",
              names.UNKNOWN_RACE: "unknown"}
# Which test images count. ages_21_60 is the protocol of the ordinal-regression papers
# on UTKFace (OR-CNN, CORAL), which keep ages 21 to 60 only.
PROTOCOLS = EVAL_PROTOCOLS  # name -> what it counts


def protocol_mask(ages, protocol):
    """Which of these ages the evaluation protocol keeps."""
    ages = np.asarray(ages)
    if protocol == "random":
        return np.ones(ages.shape, bool)
    if protocol == "ages_21_60":
        return (ages >= 21) & (ages <= 60)
    raise UsageError(f"unknown evaluation protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")


def split_ages_and_genders(data_dir, split, skip_corrupt_records=False):
    """Ages and genders of every (readable) record of a split, without decoding any image."""
    spec = {"age": schema.FEATURE_SPEC["age"], "gender": schema.FEATURE_SPEC["gender"]}
    files = input_pipeline.list_shards(data_dir, split)
    records = tf.data.TFRecordDataset(files)
    if skip_corrupt_records:
        records = records.ignore_errors()
    data = records.batch(1024).map(lambda s: tf.io.parse_example(s, spec))
    ages, genders = [], []
    for batch in data:
        ages.append(batch["age"].numpy())
        genders.append(batch["gender"].numpy())
    return np.concatenate(ages), np.concatenate(genders)


def predict_split(model, input_config, split, batch_size=64, flip_average=False,
                  show_progress=None):
    """Runs `model` over one pass of a split (with flip_average, averaged with the mirrored
    images); returns (outputs, labels) as numpy arrays. A progress bar is shown when
    `show_progress`, or (None) when stderr is a terminal."""
    data = input_pipeline.build_dataset(input_config, split, batch_size, training=False,
                                        include_metadata=True)
    outputs, collected = {}, {}
    show = progress.shown(show_progress)
    total = input_pipeline.num_examples(input_config.data_dir, split) if show else None
    with progress.progress_bar(total, f"evaluating {split}", "image", show) as bar:
        for images, batch_labels in data:
            result = model_lib.predict_outputs(model, images, flip_average=flip_average)
            for key, value in result.items():
                outputs.setdefault(key, []).append(np.asarray(value))
            for key, value in batch_labels.items():
                collected.setdefault(key, []).append(np.asarray(value))
            bar.update(int(images.shape[0]))
    return ({k: np.concatenate(v) for k, v in outputs.items()},
            {k: np.concatenate(v) for k, v in collected.items()})


def _age_metrics(predicted, true):
    error = np.abs(predicted - true)
    return {"mae": float(error.mean()), "cs5": float((error <= heads.CS_THRESHOLD_YEARS).mean())}


def _breakdown(groups, predicted_age, true_age, gender_hit, baseline_age, baseline_gender_hit,
               exact, gender_known):
    """Per-group rows: the model's numbers and, beside them, the constant predictor's; ages
    of the group's exact-age faces, gender of its known-gender faces."""
    rows = []
    for name, mask in groups:
        if not mask.any():
            continue
        row = {"group": name, "count": int(mask.sum())}
        aged, sexed = mask & exact, mask & gender_known
        if predicted_age is not None and aged.any():
            row.update(_age_metrics(predicted_age[aged], true_age[aged]))
            row["constant_mae"] = float(np.abs(baseline_age - true_age[aged]).mean())
        if gender_hit is not None and sexed.any():
            row["gender_accuracy"] = float(gender_hit[sexed].mean())
            row["constant_gender_accuracy"] = float(baseline_gender_hit[sexed].mean())
        rows.append(row)
    return rows


def predicted_ages(outputs):
    """Predicted age in years (float64 numpy) from numpy model outputs; None without an age head."""
    years = model_outputs.from_heads(outputs).ages
    return None if years is None else years.astype(np.float64)


def summarize(outputs, batch_labels, train_ages, train_genders):
    """The evaluation report (a JSON-ready dict) of predictions against labels. MAE, CS@5 and
    range accuracy count exact ages, gender accuracy known genders; faces whose age is a
    range are scored in `age_ranges` (agetf.evaluation.range_metrics)."""
    true_age = batch_labels["age"].astype(np.float64)
    kinds = range_metrics.label_kinds(batch_labels)
    exact, gender_known = kinds["exact"], kinds["gender_known"]
    predicted = model_outputs.from_heads(outputs)
    predicted_age = None if predicted.ages is None else predicted.ages.astype(np.float64)
    gender_hit = None
    metrics = {}
    if predicted_age is not None and exact.any():
        metrics.update(_age_metrics(predicted_age[exact], true_age[exact]))
    if predicted.age_ranges is not None and exact.any():
        metrics["age_range_accuracy"] = float(
            (predicted.age_ranges == batch_labels["age_range"])[exact].mean())
    if predicted.female_probabilities is not None:
        predicted_gender = prediction_text.predicted_gender(predicted.female_probabilities)
        gender_hit = predicted_gender == (batch_labels["gender"] > 0.5)
        if gender_known.any():
            metrics["gender_accuracy"] = float(gender_hit[gender_known].mean())

    # The constant predictor learns from the training faces whose labels are known.
    median_age = float(np.median(train_ages[train_ages >= 0]))
    majority_gender = int(np.mean(train_genders[train_genders >= 0]) > 0.5)
    baseline = {"constant_age": median_age, "constant_gender": labels.GENDER_NAMES[majority_gender]}
    if exact.any():
        baseline.update(_age_metrics(np.full_like(true_age[exact], median_age), true_age[exact]))
    if "age_range" in outputs and exact.any():
        constant_range = labels.age_range(np.array([median_age]))[0]
        baseline["age_range_accuracy"] = float(
            (batch_labels["age_range"][exact] == constant_range).mean())
    baseline_gender_hit = (batch_labels["gender"] > 0.5) == majority_gender
    if gender_known.any():
        baseline["gender_accuracy"] = float(baseline_gender_hit[gender_known].mean())

    # Decades group exact ages, genders known genders: a range or -1 is neither.
    decades = [(f"{d}-{d + 9}", exact & (true_age >= d) & (true_age < d + 10))
               for d in range(0, 80, 10)]
    decades.append(("80+", exact & (true_age >= 80)))
    genders = [(name, gender_known & ((batch_labels["gender"] > 0.5) == bool(i)))
               for i, name in enumerate(labels.GENDER_NAMES)]
    races = [(RACE_NAMES.get(r, str(r)), batch_labels["race"] == r) for r in sorted(RACE_NAMES)]
    by_group = (predicted_age, true_age, gender_hit, median_age, baseline_gender_hit, exact,
                gender_known)
    report = {
        "num_images": int(true_age.size),
        "metrics": metrics,
        "constant_baseline": baseline,
        "by_age_decade": _breakdown(decades, *by_group),
        "by_gender": _breakdown(genders, *by_group),
        "by_race": _breakdown(races, *by_group),
        "labels": range_metrics.label_counts(kinds),
    }
    ranges = range_metrics.range_report(predicted_age, batch_labels, median_age, kinds)
    if ranges is not None:
        report["age_ranges"] = ranges
    return report


def prediction_lines(outputs, batch_labels, count):
    """The older project's per-image lines for the first `count` images
    (agetf.evaluation.prediction_text's, as agetf.predict prints them, without the female
    probability)."""
    lines = []
    faces = model_outputs.from_heads(outputs).faces(min(count, len(batch_labels["age"])))
    for i, face in enumerate(faces):
        name = batch_labels["filename"][i]
        lines.append(f"Predicting for image {name.decode() if isinstance(name, bytes) else name}")
        age_min = int(batch_labels.get("age_min", batch_labels["age"])[i])
        age_max = int(batch_labels.get("age_max", batch_labels["age"])[i])
        gender = int(batch_labels["gender"][i])
        lines += prediction_text.face_lines(
            age=face.age, age_range=face.age_range, female_probability=face.female_probability,
            true_age=(age_min, age_max) if age_min >= 0 else None,
            true_gender=gender if gender >= 0 else None, show_probability=False)
    return lines


def format_report(report):
    """A plain-text table of the report, for the terminal."""
    metrics, baseline = report["metrics"], report["constant_baseline"]
    lines = [f"Evaluated {report['num_images']} {report.get('split', 'test')} images"
             + (f" (protocol {report['protocol']}: {PROTOCOLS[report['protocol']]})"
                if report.get("protocol") in PROTOCOLS else ""),
             f"{'metric':<22}{'model':>10}{'constant':>10}"]
    for name in ("mae", "cs5", "age_range_accuracy", "gender_accuracy"):
        if name in metrics:
            lines.append(f"{name:<22}{metrics[name]:>10.3f}"
                         f"{baseline.get(name, float('nan')):>10.3f}")
    lines.append(f"(constant predictor: age {baseline['constant_age']:.0f}, "
                 f"gender {baseline['constant_gender']})")
    if report.get("age_ranges"):
        lines += range_metrics.format_range_report(report["age_ranges"])
    for title, key in (("age decade", "by_age_decade"), ("gender", "by_gender"),
                       ("race", "by_race")):
        rows = report[key]
        if not rows:
            continue
        lines.append(f"by {title}:")
        for row in rows:
            parts = [f"{row['group']:<10}", f"n={row['count']:<5}"]
            if "mae" in row:
                parts.append(f"MAE {row['mae']:6.2f} (constant {row['constant_mae']:6.2f})")
            if "gender_accuracy" in row:
                parts.append(f"gender acc {row['gender_accuracy']:.3f} "
                             f"(constant {row['constant_gender_accuracy']:.3f})")
            lines.append("  " + "  ".join(parts))
    return "\n".join(lines)


def evaluate(model, input_config, split="test", batch_size=64, print_predictions=0,
             protocol="random", flip_average=False, show_progress=None,
             interval_knots=None):
    """Evaluates `model` on `split` under an evaluation protocol (with flip_average, on the mean
    of each image's and its mirror image's outputs); returns (report, lines to print).
    show_progress: a progress bar on stderr; None: when stderr is a terminal.
    interval_knots: the age interval's calibration ((predicted age, temperature) pairs),
    reported against none (agetf.evaluation.interval_calibration); None: none."""
    protocol_mask([], protocol)  # an unknown protocol fails before the model runs
    outputs, batch_labels = predict_split(model, input_config, split, batch_size, flip_average,
                                          show_progress)
    keep = protocol_mask(batch_labels["age"], protocol)
    if not keep.any():
        raise UsageError(f"no {split} image fits protocol {protocol} ({PROTOCOLS[protocol]}); "
                         "use --eval_protocol=random")
    outputs = {key: value[keep] for key, value in outputs.items()}
    batch_labels = {key: value[keep] for key, value in batch_labels.items()}
    train_ages, train_genders = split_ages_and_genders(input_config.data_dir, "train",
                                                       input_config.skip_corrupt_records)
    # The constant predictor knows the protocol too: the median of the kept training ages.
    train_keep = protocol_mask(train_ages, protocol)
    if train_keep.any():
        train_ages, train_genders = train_ages[train_keep], train_genders[train_keep]
    report = summarize(outputs, batch_labels, train_ages, train_genders)
    report.update(interval_calibration.report_sections(
        outputs, batch_labels, interval_knots or age_intervals.NO_CALIBRATION))
    report["split"] = split
    report["protocol"] = protocol
    report["protocol_description"] = PROTOCOLS[protocol]
    report["test_time_flip"] = bool(flip_average)
    lines = prediction_lines(outputs, batch_labels, print_predictions)
    return report, lines
