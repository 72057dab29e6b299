"""Converts folders of named face crops into sharded TFRecords that TFDS can load.

Three passes: list and name-parse every file; validate each image in worker processes
(full decode; pass valid RGB JPEG bytes through, re-encode anything else decodable,
skip the rest with a reason); write each split's shards under a temporary folder and
rename them into place when complete, then the TFDS metadata and a JSON report.

TensorFlow is imported only where records are written: the validation workers are
spawned processes that import this module, and they need only Pillow.
"""

import csv
import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import time

from PIL import Image

from agetf import names

SPLITS = ("train", "validation", "test")  # the same as schema.SPLITS, without importing TF
DEFAULT_SPLIT_RATIOS = (0.8, 0.1, 0.1)
DEFAULT_SHARD_BYTES = 128 * 1024 * 1024
REENCODE_QUALITY = 95
REPORT_FILE = "conversion_report.json"
SPLIT_FILE = "splits.csv"  # file name, split: written with write_split_file, read with split_file
METADATA_FILES = ("dataset_info.json", "features.json", REPORT_FILE, SPLIT_FILE)
INCOMPLETE_DIR = ".incomplete"  # shards are written here, then renamed into place

REASON_EMPTY = "empty file"
REASON_NOT_IMAGE = "not a decodable image"
REASON_TRUNCATED = "truncated or corrupt image"
REASON_DUPLICATE = "duplicate file name"
REASON_UNREADABLE = "unreadable file"
REASON_NOT_REGULAR = "not a regular file"
REASON_NOT_IN_SPLIT_FILE = "not in the split file"

_DATASET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_SHARD_FILE = re.compile(r"-(?:train|validation|test)\.tfrecord-\d{5,}-of-\d{5,}$")


class ConversionError(ValueError):
    """A bad conversion setting or input; the message is one line naming the fix."""


@dataclasses.dataclass(frozen=True)
class ConversionConfig:
    """Everything a conversion needs; built from flags by agetf.convert."""

    input_dirs: list
    output_dir: str
    split_ratios: tuple = DEFAULT_SPLIT_RATIOS
    min_shards: int = 4
    num_shards: int | None = None  # per split; overrides the size-based count
    shard_bytes: int = DEFAULT_SHARD_BYTES
    age_deviation: float = 5.0
    dataset_name: str = "faces"
    workers: int | None = None  # None: every core
    overwrite: bool = False
    show_progress: bool = True
    split_file: str | None = None  # a published split (file name, split); replaces the hash split
    write_split_file: bool = False  # write OUTPUT/splits.csv of every kept file


@dataclasses.dataclass
class _Candidate:
    path: str
    file_name: str
    labels: names.FaceLabels
    split: str


# --- settings -------------------------------------------------------------------------

def parse_split_ratios(text):
    """Parses "0.8,0.1,0.1" into a tuple of three ratios; raises ConversionError."""
    try:
        ratios = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConversionError(f"--split_ratios={text!r} is not three numbers; use e.g. 0.8,0.1,0.1") from None
    return ratios


def validate_config(config):
    """Raises ConversionError (one line) for any bad setting or input, before any work."""
    ratios = config.split_ratios
    if (len(ratios) != 3 or any(not math.isfinite(r) or r < 0 for r in ratios)
            or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0):
        raise ConversionError(
            f"split ratios {ratios} must be three non-negative numbers summing to 1 with train > 0; "
            "use e.g. --split_ratios=0.8,0.1,0.1")
    if config.min_shards < 1:
        raise ConversionError(f"--min_shards must be >= 1, got {config.min_shards}")
    if config.num_shards is not None and config.num_shards < 1:
        raise ConversionError(f"--num_shards must be >= 1 or unset, got {config.num_shards}")
    if config.shard_bytes < 1:
        raise ConversionError(f"shard_bytes must be >= 1, got {config.shard_bytes}")
    if not config.age_deviation > 0:
        raise ConversionError(f"--age_deviation must be > 0 years, got {config.age_deviation}")
    if not _DATASET_NAME.match(config.dataset_name):
        raise ConversionError(
            f"--dataset_name={config.dataset_name!r} is not a valid TFDS name; "
            "use letters, digits and underscores, starting with a letter")
    if config.workers is not None and config.workers < 1:
        raise ConversionError(f"--workers must be >= 1, got {config.workers}")
    if not config.input_dirs:
        raise ConversionError("no input directory given; pass --input_dir=DIR")
    for input_dir in config.input_dirs:
        if not os.path.isdir(input_dir):
            raise ConversionError(f"input directory {input_dir} does not exist; check --input_dir")
        if not any(files for _, _, files in os.walk(input_dir)):
            raise ConversionError(f"input directory {input_dir} holds no files; check --input_dir")
    output = os.path.abspath(config.output_dir)
    if os.path.exists(output) and not os.path.isdir(output):
        raise ConversionError(f"output {config.output_dir} is a file; choose a directory for --output_dir")
    for input_dir in config.input_dirs:
        if os.path.commonpath([output, os.path.abspath(input_dir)]) == os.path.abspath(input_dir):
            raise ConversionError(f"output {config.output_dir} is inside input {input_dir}; choose another --output_dir")
    if os.path.isdir(output) and os.listdir(output) and not config.overwrite:
        raise ConversionError(
            f"output directory {config.output_dir} is not empty; pass --overwrite to replace its dataset")


# --- splits and shards ----------------------------------------------------------------

def _name_hash(file_name, salt):
    digest = hashlib.sha1(f"{salt}:{file_name}".encode("utf-8")).hexdigest()
    return int(digest[:15], 16) / float(16 ** 15)


def assign_split(file_name, split_ratios=DEFAULT_SPLIT_RATIOS):
    """The split of a file, from a stable hash of its base name: adding files never moves it."""
    position = _name_hash(file_name, "split")
    cumulative = 0.0
    for split, ratio in zip(SPLITS, split_ratios):
        cumulative += ratio
        if position < cumulative:
            return split
    return next(split for split, ratio in reversed(list(zip(SPLITS, split_ratios))) if ratio > 0)


def read_split_file(path):
    """{file name: split} from a CSV of `file name, split` rows (a header row is allowed)."""
    try:
        with open(path, newline="") as f:
            rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    except OSError as error:
        raise ConversionError(f"cannot read --split_file={path} ({error.strerror}); "
                              "pass a CSV of file name, split rows") from None
    if rows and [cell.strip() for cell in rows[0]] == ["filename", "split"]:
        rows = rows[1:]
    splits = {}
    for number, row in enumerate(rows, start=1):
        if len(row) != 2 or row[1].strip() not in SPLITS:
            raise ConversionError(f"--split_file={path} row {number} {row!r} is not "
                                  f"'file name,split' with split one of {', '.join(SPLITS)}")
        name, split = os.path.basename(row[0].strip()), row[1].strip()
        if splits.setdefault(name, split) != split:
            raise ConversionError(f"--split_file={path} puts {name} in both {splits[name]} and "
                                  f"{split}; keep one row per file")
    if not splits:
        raise ConversionError(f"--split_file={path} lists no file; pass a CSV of file name, "
                              "split rows")
    return splits


def write_split_file(path, by_split):
    """Writes `filename,split` rows of every kept file, sorted by name, atomically."""
    rows = sorted((candidate.file_name, split)
                  for split, items in by_split.items() for candidate, *_ in items)
    temporary = path + ".tmp"
    with open(temporary, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "split"])
        writer.writerows(rows)
    os.replace(temporary, path)


def count_shards(num_records, num_bytes, config):
    """Shards for one split: about shard_bytes each, at least min_shards, never more than records."""
    if num_records == 0:
        return 0
    wanted = config.num_shards or max(config.min_shards, math.ceil(num_bytes / config.shard_bytes))
    return min(wanted, num_records)


# --- listing --------------------------------------------------------------------------

def list_files(input_dirs):
    """Every regular file under the input folders, recursively, in a stable order."""
    paths = []
    for input_dir in input_dirs:
        for root, dirs, files in os.walk(input_dir):
            dirs.sort()
            paths.extend(os.path.join(root, name) for name in sorted(files))
    return paths


def collect_candidates(paths, split_ratios, split_map=None):
    """Parses every name; returns (candidates, skipped) where skipped is [(path, reason)].

    With split_map ({file name: split}) files get exactly those splits and unlisted files
    are skipped; without it, splits come from the hash of the name.
    """
    candidates, skipped, seen = [], [], set()
    for path in paths:
        file_name = os.path.basename(path)
        try:
            labels = names.parse_face_name(file_name)
        except names.UnparseableName as error:
            skipped.append((path, error.reason))
            continue
        # The same name twice would be the same identity in two places; keep the first.
        if file_name in seen:
            skipped.append((path, REASON_DUPLICATE))
            continue
        seen.add(file_name)
        if split_map is None:
            split = assign_split(file_name, split_ratios)
        elif file_name in split_map:
            split = split_map[file_name]
        else:
            skipped.append((path, REASON_NOT_IN_SPLIT_FILE))
            continue
        candidates.append(_Candidate(path, file_name, labels, split))
    return candidates, skipped


# --- image validation (runs in worker processes) --------------------------------------

def check_image(path):
    """Fully decodes one file: returns (reason, height, width, reencoded_jpeg_or_None, num_bytes).

    reason is None for a usable image; valid RGB JPEGs are passed through (None bytes).
    """
    if os.path.exists(path) and not os.path.isfile(path):
        return REASON_NOT_REGULAR, 0, 0, None, 0  # opening a FIFO or a device could block forever
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:  # vanished, no permission, a broken link
        return REASON_UNREADABLE, 0, 0, None, 0
    if not data:
        return REASON_EMPTY, 0, 0, None, 0
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:  # Pillow raises many types for non-images
        return REASON_NOT_IMAGE, 0, 0, None, 0
    try:
        image.load()  # a full decode: catches truncated and corrupt data
    except Exception:
        return REASON_TRUNCATED, 0, 0, None, 0
    width, height = image.size
    if image.format == "JPEG" and image.mode == "RGB":
        return None, height, width, None, len(data)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=REENCODE_QUALITY)
    encoded = buffer.getvalue()
    return None, height, width, encoded, len(encoded)


def _check_all(paths, workers, progress):
    """check_image over paths, in order, in `workers` spawned processes."""
    if workers <= 1 or len(paths) < 2:
        for path in paths:
            yield check_image(path)
            progress.add(1)
        return
    # spawn, not fork: the caller may have TensorFlow's threads and locks live.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        chunk = max(1, min(64, len(paths) // (workers * 4)))
        for result in pool.imap(check_image, paths, chunksize=chunk):
            yield result
            progress.add(1)


# --- progress -------------------------------------------------------------------------

class _Progress:
    """A one-line progress bar on stderr, redrawn when the percentage changes."""

    def __init__(self, label, total, enabled):
        self.label, self.total, self.enabled = label, max(total, 1), enabled
        self.done, self.start, self.shown = 0, time.monotonic(), -1

    def add(self, count):
        self.done += count
        percent = 100 * self.done // self.total
        if self.enabled and percent != self.shown:
            self.shown = percent
            rate = self.done / max(time.monotonic() - self.start, 1e-9)
            bar = "#" * (percent // 4)
            sys.stderr.write(f"\r{self.label:<10} [{bar:<25}] {self.done}/{self.total} {rate:,.0f}/s")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


# --- writing --------------------------------------------------------------------------

def _prepare_output(output_dir):
    """Removes a previous dataset's shards, metadata and leftovers (other files are kept)."""
    os.makedirs(output_dir, exist_ok=True)
    for entry in os.listdir(output_dir):
        path = os.path.join(output_dir, entry)
        if entry == INCOMPLETE_DIR:
            shutil.rmtree(path)
        elif entry in METADATA_FILES or entry.endswith(".labels.txt") or _SHARD_FILE.search(entry):
            os.remove(path)
    os.makedirs(os.path.join(output_dir, INCOMPLETE_DIR))


def _write_split(split, records, num_shards, config, progress):
    """Writes one split's records round-robin into shards; returns the shard lengths and bytes."""
    import tensorflow as tf

    from agetf import schema

    lengths, sizes = [], []
    for index in range(num_shards):
        name = schema.shard_name(config.dataset_name, split, index, num_shards)
        temporary = os.path.join(config.output_dir, INCOMPLETE_DIR, name)
        with tf.io.TFRecordWriter(temporary) as writer:
            for candidate, (height, width, encoded) in records[index::num_shards]:
                if encoded is None:
                    with open(candidate.path, "rb") as f:
                        encoded = f.read()
                writer.write(schema.make_example(
                    jpeg=encoded, age=candidate.labels.age, gender=candidate.labels.gender,
                    race=candidate.labels.race, filename=candidate.file_name, height=height,
                    width=width, age_deviation=config.age_deviation))
                progress.add(1)
        # Only a complete shard ever carries a final name.
        os.replace(temporary, os.path.join(config.output_dir, name))
        lengths.append(len(records[index::num_shards]))
        sizes.append(os.path.getsize(os.path.join(config.output_dir, name)))
    return lengths, sum(sizes)


def _write_metadata(config, shard_lengths, split_bytes):
    """dataset_info.json + features.json, so tfds.builder_from_directory loads the folder."""
    import tensorflow_datasets as tfds

    from agetf import schema

    split_infos = [
        tfds.core.SplitInfo(name=split, shard_lengths=shard_lengths[split], num_bytes=split_bytes[split])
        for split in SPLITS if shard_lengths[split]
    ]
    tfds.folder_dataset.write_metadata(
        data_dir=config.output_dir, features=schema.tfds_features(), split_infos=split_infos,
        filename_template=None, check_data=False,
        description="Face crops with age, gender and race labels, converted by agetf.")


def _order_for_writing(candidates):
    """A stable pseudo-random order, so no shard holds one narrow age band (names start with age)."""
    return sorted(candidates, key=lambda c: _name_hash(c.file_name, "order"))


def _available_cores():
    """Cores this process may use (a container's CPU limit, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_candidates(candidates, workers, show_progress):
    """Checks every image; returns ({split: [(candidate, (height, width, jpeg|None), size)]}, skipped)."""
    progress = _Progress("checking", len(candidates), show_progress)
    by_split, skipped = {split: [] for split in SPLITS}, []
    results = _check_all([c.path for c in candidates], workers, progress)
    for candidate, (reason, height, width, encoded, size) in zip(candidates, results):
        if reason:
            skipped.append((candidate.path, reason))
        else:
            by_split[candidate.split].append((candidate, (height, width, encoded), size))
    return by_split, skipped


def convert(config):
    """Runs a whole conversion; returns the report dict (also written as conversion_report.json).

    Raises ConversionError before writing anything when a setting or input is bad.
    """
    config = dataclasses.replace(config, input_dirs=[os.fspath(d) for d in config.input_dirs],
                                 output_dir=os.fspath(config.output_dir))
    validate_config(config)
    start = time.monotonic()
    workers = config.workers or _available_cores()
    split_map = read_split_file(config.split_file) if config.split_file else None
    candidates, skipped = collect_candidates(list_files(config.input_dirs), config.split_ratios,
                                             split_map)
    candidates = _order_for_writing(candidates)

    by_split, bad_images = _check_candidates(candidates, workers, config.show_progress)
    skipped += bad_images
    if not by_split["train"]:
        reasons = ", ".join(sorted({reason for _, reason in skipped})) or "none found"
        raise ConversionError(f"no usable training image in {', '.join(config.input_dirs)} "
                              f"({len(skipped)} skipped: {reasons}); check --input_dir")
    num_shards = {
        split: count_shards(len(items), sum(size for *_, size in items), config)
        for split, items in by_split.items()
    }
    import tensorflow as tf  # noqa: F401  (imported before the bar starts, so its rate is honest)

    _prepare_output(config.output_dir)
    writing = _Progress("writing", sum(map(len, by_split.values())), config.show_progress)
    shard_lengths, split_bytes = {}, {}
    for split in SPLITS:
        records = [(candidate, image) for candidate, image, _ in by_split[split]]
        shard_lengths[split], split_bytes[split] = _write_split(
            split, records, num_shards[split], config, writing)
    _write_metadata(config, shard_lengths, split_bytes)
    if config.write_split_file:
        write_split_file(os.path.join(config.output_dir, SPLIT_FILE), by_split)
    report = _write_report(config, shard_lengths, skipped, start, split_map,
                           _image_sizes(by_split))
    os.rmdir(os.path.join(config.output_dir, INCOMPLETE_DIR))  # last: its absence marks a finished run
    return report


def _image_sizes(by_split):
    """{split: {"HxW": count}}: the pipeline decodes straight to a fixed size when one size is all."""
    sizes = {}
    for split, items in by_split.items():
        counts = sizes.setdefault(split, {})
        for _, (height, width, _), _ in items:
            key = f"{height}x{width}"
            counts[key] = counts.get(key, 0) + 1
    return {split: dict(sorted(counts.items())) for split, counts in sizes.items()}


def _write_report(config, shard_lengths, skipped, start, split_map=None, image_sizes=None):
    """Writes conversion_report.json and returns its contents."""
    from agetf import labels, schema

    elapsed = time.monotonic() - start
    counts = {split: sum(shard_lengths[split]) for split in SPLITS}
    kept = sum(counts.values())
    by_reason = {}
    for _, reason in skipped:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    report = {
        "schema_version": schema.SCHEMA_VERSION,
        "counts": counts,
        "total_kept": kept,
        "total_skipped": len(skipped),
        "skipped_by_reason": dict(sorted(by_reason.items())),
        "skipped": [{"path": path, "reason": reason} for path, reason in sorted(skipped)],
        "image_sizes": image_sizes or {},
        "settings": {
            "input_dirs": list(config.input_dirs),
            "dataset_name": config.dataset_name,
            "age_deviation": config.age_deviation,
            "num_age_bins": labels.NUM_AGE_BINS,
            "num_age_ranges": labels.NUM_AGE_RANGES,
            "split_ratios": dict(zip(SPLITS, config.split_ratios)),
            "split_file": os.path.abspath(config.split_file) if config.split_file else None,
            "split_file_rows": len(split_map) if split_map else None,
            "shards": {split: len(shard_lengths[split]) for split in SPLITS},
            "shard_lengths": shard_lengths,
        },
        "elapsed_seconds": round(elapsed, 3),
        "images_per_second": round((kept + len(skipped)) / max(elapsed, 1e-9), 1),
    }
    with open(os.path.join(config.output_dir, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=2)
    return report


def summarize(report):
    """A few human-readable lines about a finished conversion."""
    lines = [f"kept {report['total_kept']} images, skipped {report['total_skipped']} "
             f"in {report['elapsed_seconds']:.1f} s ({report['images_per_second']:,.0f} images/s)"]
    lines += [f"  {split:<10} {report['counts'][split]:>7} images in {report['settings']['shards'][split]} shards"
              for split in SPLITS]
    lines += [f"  skipped: {count} x {reason}" for reason, count in report["skipped_by_reason"].items()]
    return "\n".join(lines)
