"""A conversion's report: conversion_report.json (what was kept and skipped, and how), and
the few lines the converter prints about it. docs/converting.md lists its keys."""

import json
import os
import time

from agetf.common import files
from agetf.data import names, record_fields
from agetf.data.convert_config import format_split_ratios
from agetf.data.dataset_files import REPORT_FILE, SPLITS
from agetf.data.split_files import ONE_SPLIT_FILE


def _split_settings(config, plan, missing):
    """The report's settings about how files were split."""
    ratios = format_split_ratios(config.split_ratios)
    per_split = plan is not None and ONE_SPLIT_FILE not in plan.files
    missing_by_file = None
    if per_split:
        missing_by_file = {source: 0 for source in plan.files if source in SPLITS}
        for file_name in missing:
            missing_by_file[plan.listed_in[file_name]] += 1
    return {
        "split_method": (plan.method if plan
                         else f"SHA-1 hash of the file name against --split_ratios={ratios}"),
        "split_file": (None if plan is None else plan.files[ONE_SPLIT_FILE] if not per_split
                       else {source: plan.files[source]
                             for source in SPLITS if source in plan.files}),
        "split_file_rows": sum(plan.rows.values()) if plan else None,
        "split_file_rows_by_file": dict(plan.rows) if per_split else None,
        "split_file_validation_share": plan.validation_share if plan else None,
        "split_file_age_check": plan.age_check if plan else None,
        "split_file_missing": list(missing),
        "split_file_missing_by_file": missing_by_file,
    }


def _skipped_entry(path, reason, labels_file=None, line=None):
    """One `skipped` item: a manifest's row also gives its labels file and line."""
    if labels_file is None:
        return {"path": path, "reason": reason}
    return {"path": path, "reason": reason, "labels_file": labels_file, "line": line}


def write_report(config, shard_lengths, skipped, start, plan=None, image_sizes=None,
                 missing_from_split_file=(), noted=None, folder=None):
    """Writes conversion_report.json into `folder` atomically and returns its contents.

    Args:
      config: the conversion's ConvertConfig.
      shard_lengths: {split: [records in each shard]}.
      skipped: [(path, reason)] of every file left out; a manifest's rows add (labels file,
        line).
      start: time.monotonic() when the conversion started.
      plan: the split_files.SplitPlan of --split_file, or None for the hash split.
      image_sizes: {split: {"HxW": count}} of the kept images.
      missing_from_split_file: file names the split file lists and the input lacks.
      noted: {names.NOTE_*: [file names]} of kept files with odd names.
      folder: where to write it; None: config.output_dir.
    """
    from agetf.data import labels  # labels imports TensorFlow; the driver imports this module

    elapsed = time.monotonic() - start
    counts = {split: sum(shard_lengths[split]) for split in SPLITS}
    kept = sum(counts.values())
    by_reason = {}
    for item in skipped:
        by_reason[item[1]] = by_reason.get(item[1], 0) + 1
    report = {
        "schema_version": record_fields.SCHEMA_VERSION,
        "counts": counts,
        "total_kept": kept,
        "total_skipped": len(skipped),
        "skipped_by_reason": dict(sorted(by_reason.items())),
        "skipped": [_skipped_entry(*item) for item in sorted(skipped)],
        # Kept files whose names are odd but parse unambiguously, e.g. without a race field.
        "kept_with_notes": {note: {"count": len(noted[note]), "files": sorted(noted[note])}
                            for note in names.NOTES if note in (noted or {})},
        "image_sizes": image_sizes or {},
        "settings": {
            "input_dirs": list(config.input_dirs),
            "dataset_name": config.dataset_name,
            "age_deviation": config.age_deviation,
            "num_age_bins": labels.NUM_AGE_BINS,
            "num_age_ranges": labels.NUM_AGE_RANGES,
            "split_ratios": dict(zip(SPLITS, config.split_ratios)),
            **_split_settings(config, plan, missing_from_split_file),
            "labels": config.labels,
            "labels_format": (config.labels_format or "manifest" if config.reads_labels_file
                              else "file names"),
            "apparent_age": config.apparent_age,
            "min_face_score": (config.min_face_score if config.labels_format == "imdb_wiki"
                               else None),
            "shards": {split: len(shard_lengths[split]) for split in SPLITS},
            "shard_lengths": shard_lengths,
        },
        "elapsed_seconds": round(elapsed, 3),
        "images_per_second": round((kept + len(skipped)) / max(elapsed, 1e-9), 1),
    }
    files.write_text(os.path.join(folder or config.output_dir, REPORT_FILE),
                     json.dumps(report, indent=2))
    return report


def summarize(report):
    """A few human-readable lines about a finished conversion."""
    lines = [f"kept {report['total_kept']} images, skipped {report['total_skipped']} "
             f"in {report['elapsed_seconds']:.1f} s ({report['images_per_second']:,.0f} images/s)"]
    lines += [f"  {split:<10} {report['counts'][split]:>7} images in "
              f"{report['settings']['shards'][split]} shards" for split in SPLITS]
    lines += [f"  skipped: {count} x {reason}"
              for reason, count in report["skipped_by_reason"].items()]
    lines += [f"  kept with a note: {item['count']} x {note}"
              for note, item in report.get("kept_with_notes", {}).items()]
    settings = report["settings"]
    missing = settings.get("split_file_missing")
    if missing:
        by_file = settings.get("split_file_missing_by_file")
        where = "".join(f"{source}= {count}, " for source, count in (by_file or {}).items())
        plural = "s" if by_file else ""
        lines.append(f"  warning: {len(missing)} files of the split file{plural} are "
                     f"not in the input ({where}e.g. {missing[0]}); the split differs from the "
                     "published one unless they were left out on purpose")
    return "\n".join(lines)
