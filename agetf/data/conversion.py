"""Converts folders of named face crops into sharded TFRecords that TFDS can load.

First every file is listed and its name parsed (its split comes from a hash of the name,
each split's shard count from the files' sizes). Then, in one streaming pass, worker
processes check each image (a decode; valid RGB JPEG bytes pass through, anything else
decodable is re-encoded, the rest skipped with a reason) and serialize its record, while
the main process writes the records into shards under a temporary folder as they arrive.
The complete dataset (shards, TFDS metadata, JSON report) is built in that folder, then
swapped with the output folder in one step (_swap_in), so the output folder holds the old
complete dataset or the new one at every moment, a kill -9 included. One conversion at a
time per output folder: it holds a lock on OUTPUT/.convert.lock (run_lock) while it runs.

Workers are spawned processes that import this module and need only Pillow: records are
written in the protobuf wire format directly, and TensorFlow is imported only in the
main process.
"""

import collections
import contextlib
import csv
import ctypes
import dataclasses
import errno
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import shutil
import stat
import sys
import time

from agetf import UsageError
from agetf.common import files, run_lock
from agetf.data import image_files, names
from agetf.data.dataset_files import REPORT_FILE, SHARD_FILE, SPLITS, shard_name
from agetf.data.image_files import (REASON_EMPTY, REASON_NOT_IMAGE,  # noqa: F401
                                    REASON_NOT_REGULAR, REASON_TRUNCATED, REASON_UNREADABLE)

DEFAULT_SPLIT_RATIOS = (0.8, 0.1, 0.1)
DEFAULT_SHARD_BYTES = 128 * 1024 * 1024
SPLIT_FILE = "splits.csv"  # file name, split: written with write_split_file, read with split_file
METADATA_FILES = ("dataset_info.json", "features.json", REPORT_FILE, SPLIT_FILE)
INCOMPLETE_DIR = ".incomplete"  # the new dataset is built here, then swapped in
LOCK_FILE = ".convert.lock"  # held (run_lock.hold) by the conversion writing into the folder
# PARENT/.NAME.agetf-swap: the folder being swapped with the output folder NAME; only a
# conversion killed during the swap leaves it, and the next one into NAME removes it.
SWAP_SUFFIX = ".agetf-swap"

# Why a file is skipped, beside what reading it can find (image_files' REASON_*, imported).
REASON_DUPLICATE = "duplicate file name"
REASON_NOT_IN_SPLIT_FILE = "not in the split file"

_DATASET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class ConversionError(UsageError):
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
    # A published split replacing the hash split: one CSV of `file name,split` rows, or
    # per-split CSVs with a `file` column, "train=TRAIN.csv,test=TEST.csv" (read_split_files).
    split_file: str | None = None
    write_split_file: bool = False  # write OUTPUT/splits.csv of every kept file


@dataclasses.dataclass
class _Candidate:
    path: str
    file_name: str
    labels: names.FaceLabels
    split: str
    notes: tuple = ()  # names.NOTES of an odd but parseable name


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
    _refuse_a_full_output_without_overwrite(config)


def _refuse_a_full_output_without_overwrite(config):
    output = config.output_dir
    if (not config.overwrite and os.path.isdir(output)
            and any(entry != LOCK_FILE for entry in os.listdir(output))):
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


@dataclasses.dataclass
class SplitPlan:
    """Where a split file puts each listed file, and what the report says about how."""

    splits: dict  # {file name: split}
    listed_in: dict  # {file name: the split file listing it: a split name, or ONE_SPLIT_FILE}
    files: dict  # {ONE_SPLIT_FILE or split name: absolute path of that CSV}
    rows: dict  # {same keys: files it lists}
    method: str  # one sentence for the report
    validation_share: float | None = None  # of the train file's rows, taken by hash
    age_check: str | None = None  # what the age column was checked against


ONE_SPLIT_FILE = "file"  # SplitPlan key of the single `file name,split` CSV
CORAL_AGE_OFFSET = 21  # the CORAL split's age column is a class 0-39: age - 21
_SPLIT_SPEC_HELP = ("pass --split_file=SPLITS.csv (file name,split rows) or one CSV per split, "
                    "--split_file=train=TRAIN.csv,test=TEST.csv (validation=VAL.csv optional)")


def parse_split_file_spec(text):
    """{ONE_SPLIT_FILE: path} for one CSV, or {split: path} for "train=A.csv,test=B.csv";
    raises ConversionError. An existing file wins, so a path holding '=' still reads as one."""
    text = text.strip()
    head = text.split("=", 1)[0]
    if os.path.isfile(os.path.expanduser(text)) or "=" not in text or os.sep in head:
        return {ONE_SPLIT_FILE: os.path.expanduser(text)}
    files = {}
    for part in text.split(","):
        split, equals, path = (item.strip() for item in part.partition("="))
        if not equals or not split:
            raise ConversionError(f"--split_file part {part.strip()!r} is not SPLIT=FILE; {_SPLIT_SPEC_HELP}")
        if split not in SPLITS:
            raise ConversionError(f"--split_file names unknown split {split!r}; use "
                                  f"{', '.join(s + '=' for s in SPLITS)} ({_SPLIT_SPEC_HELP})")
        if split in files:
            raise ConversionError(f"--split_file names {split}= twice; give one file per split")
        if not path:
            raise ConversionError(f"--split_file {split}= has no file name; {_SPLIT_SPEC_HELP}")
        files[split] = os.path.expanduser(path)
    if "train" not in files:
        raise ConversionError(f"--split_file={text} has no train= file; the training files "
                              f"must come from one ({_SPLIT_SPEC_HELP})")
    return files


def _read_csv_rows(path, option):
    """The non-blank rows of a CSV; raises a one-line ConversionError when unreadable.
    option names the file in messages: "--split_file=A.csv" or "--split_file train=A.csv"."""
    try:
        with open(path, newline="") as f:
            return [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    except OSError as error:
        raise ConversionError(f"cannot read {option} ({error.strerror}); "
                              f"check the path ({_SPLIT_SPEC_HELP})") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise ConversionError(f"{option} is not a readable CSV ({error}); "
                              f"{_SPLIT_SPEC_HELP}") from None


def read_split_table(path, option):
    """[(row number, file name, age column or None)] of a CSV with a header naming a `file`
    (or `filename`) column and optionally an `age` column, like the CORAL split's ',file,age'."""
    rows = _read_csv_rows(path, option)
    if not rows:
        raise ConversionError(f"{option} lists no file; {_SPLIT_SPEC_HELP}")
    header = [cell.strip().lower() for cell in rows[0]]
    column = next((header.index(name) for name in ("file", "filename") if name in header), None)
    if column is None:
        raise ConversionError(f"{option} has no 'file' column (header {rows[0]!r}); "
                              "a per-split CSV needs a header row naming its file column "
                              "'file', like the CORAL split's ',file,age'")
    age_column = header.index("age") if "age" in header else None
    table = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) <= column or not row[column].strip():
            raise ConversionError(f"{option} row {number} {row!r} has no file name")
        age = None
        if age_column is not None:
            cell = row[age_column].strip() if len(row) > age_column else ""
            try:
                age = int(cell)
            except ValueError:
                raise ConversionError(f"{option} row {number} {row!r}: age {cell!r} "
                                      "is not a whole number; fix it or remove the age column") from None
        table.append((number, os.path.basename(row[column].strip()), age))
    if not table:
        raise ConversionError(f"{option} lists no file; {_SPLIT_SPEC_HELP}")
    return table


def check_age_column(table, option):
    """Checks a split file's age column against the ages in its file names: every row must
    hold the CORAL class (age - 21) or every row the age in years. Returns which, for the
    report; raises ConversionError naming the disagreeing rows."""
    pairs = []
    for number, file_name, age in table:
        try:
            pairs.append((number, file_name, age, names.parse_face_name(file_name).age))
        except names.UnparseableName:
            pass  # no age to compare; the file itself is skipped with its reason
    conventions = {"CORAL class (age - 21)": CORAL_AGE_OFFSET, "age in years": 0}
    wrong = {convention: [pair for pair in pairs if pair[3] - pair[2] != offset]
             for convention, offset in conventions.items()}
    convention = min(conventions, key=lambda c: len(wrong[c]))  # CORAL first on a tie
    if wrong[convention]:
        number, file_name, age, name_age = wrong[convention][0]
        raise ConversionError(
            f"{option}: the age column disagrees with the file names' ages in "
            f"{len(wrong[convention])} of {len(pairs)} rows read as the {convention}, e.g. row "
            f"{number}: {file_name} has {age}, its name says {name_age} (class "
            f"{name_age - CORAL_AGE_OFFSET}); fix the file or remove its age column")
    return f"{convention} in all {len(pairs)} rows with a parseable name"


def read_split_files(text, split_ratios=DEFAULT_SPLIT_RATIOS):
    """The SplitPlan of a --split_file value; raises ConversionError (one line).

    One CSV of `file name,split` rows gives each file its row's split. Per-split CSVs
    ("train=A.csv,test=B.csv", each with a `file` column) put their files in that split,
    except that without a validation= file, validation is carved out of the train file's
    rows by the hash of the file name: a share validation / (train + validation) of
    split_ratios. An `age` column is checked against the names (check_age_column).
    """
    files = parse_split_file_spec(text)
    if ONE_SPLIT_FILE in files:
        path = files[ONE_SPLIT_FILE]
        splits = read_split_file(path)
        return SplitPlan(splits=splits, listed_in=dict.fromkeys(splits, ONE_SPLIT_FILE),
                         files={ONE_SPLIT_FILE: os.path.abspath(path)}, rows={ONE_SPLIT_FILE: len(splits)},
                         method="split file: each listed file goes to the split its row names")
    share = None
    if "validation" not in files:
        train_share, validation_share = split_ratios[0], split_ratios[1]
        share = validation_share / (train_share + validation_share)
    splits, listed_in, rows, checks = {}, {}, {}, []
    for source in SPLITS:
        if source not in files:
            continue
        option = f"--split_file {source}={files[source]}"
        table = read_split_table(files[source], option)
        if any(age is not None for _, _, age in table):
            checks.append(f"{source}: {check_age_column(table, option)}")
        rows[source] = len(table)
        for number, file_name, _ in table:
            split = source
            if source == "train" and share is not None:
                split = assign_split(file_name, (1.0 - share, share, 0.0))
            if listed_in.setdefault(file_name, source) != source:
                raise ConversionError(f"--split_file lists {file_name} in both {listed_in[file_name]}= "
                                      f"and {source}= (row {number}); keep it in one file")
            splits[file_name] = split
    parts = ["train= rows go to train"]
    if share is not None:
        ratios = ",".join(f"{ratio:g}" for ratio in split_ratios)
        parts[0] += (f", except validation: the train= rows whose SHA-1 file name hash falls in "
                     f"the top {share:.4f} (validation/(train+validation) of --split_ratios={ratios}, "
                     "whose test share is unused)")
    parts += [f"{source}= rows go to {source}" for source in ("validation", "test") if source in files]
    method = "per-split files: " + "; ".join(parts) + "; input files named in no split file are left out"
    return SplitPlan(splits=splits, listed_in=listed_in,
                     files={source: os.path.abspath(path) for source, path in files.items()},
                     rows=rows, method=method, validation_share=share,
                     age_check="; ".join(checks) or None)


def read_split_file(path):
    """{file name: split} from a CSV of `file name, split` rows (a header row is allowed)."""
    rows = _read_csv_rows(path, f"--split_file={path}")
    if rows and [cell.strip() for cell in rows[0]] == ["filename", "split"]:
        rows = rows[1:]
    splits = {}
    for number, row in enumerate(rows, start=1):
        if len(row) != 2 or row[1].strip() not in SPLITS:
            raise ConversionError(f"--split_file={path} row {number} {row!r} is not "
                                  f"'file name,split' with split one of {', '.join(SPLITS)}; "
                                  "for one CSV per split, pass --split_file=train=TRAIN.csv,test=TEST.csv")
        name, split = os.path.basename(row[0].strip()), row[1].strip()
        if splits.setdefault(name, split) != split:
            raise ConversionError(f"--split_file={path} puts {name} in both {splits[name]} and "
                                  f"{split}; keep one row per file")
    if not splits:
        raise ConversionError(f"--split_file={path} lists no file; pass a CSV of file name, "
                              "split rows")
    return splits


def write_split_file(path, kept_names):
    """Writes `filename,split` rows of every kept file ({split: [file name]}), sorted by name, atomically."""
    rows = sorted((name, split) for split, file_names in kept_names.items() for name in file_names)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["filename", "split"])
    writer.writerows(rows)
    files.write_text(path, text.getvalue())


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
        for root, dirs, filenames in os.walk(input_dir):
            dirs.sort()
            paths.extend(os.path.join(root, name) for name in sorted(filenames))
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
            labels, notes = names.parse_face_name_with_notes(file_name)
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
        candidates.append(_Candidate(path, file_name, labels, split, notes))
    return candidates, skipped


# --- records: tf.train.Example bytes without TensorFlow -------------------------------
# The protobuf wire format of tensorflow/core/example/{example,feature}.proto, written
# directly so that worker processes need not import TensorFlow (seconds and hundreds of
# MiB each). Example.features = 1; Features.feature = 1, a map whose entries hold key = 1
# and value = 2; Feature.bytes_list = 1, float_list = 2, int64_list = 3; each list's
# values = 1 (packed for numbers). tests/test_convert.py checks that the records parse
# equal to schema.make_example's.

_BYTES_LIST, _FLOAT_LIST, _INT64_LIST = 1, 2, 3
_SMALL_VARINTS = [bytes((value,)) for value in range(0x80)]


def _varint(value):
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]
    value &= 0xFFFFFFFFFFFFFFFF  # an int64 in two's complement: race -1 takes ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field_number, payload):
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def _feature_entry(key, kind, payload):
    """One `key: Feature` entry of Features.feature; payload is the list's value bytes."""
    feature = _length_delimited(kind, _length_delimited(1, payload))
    return _length_delimited(1, _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, feature))


@functools.lru_cache(maxsize=4096)  # genders, races and image sides repeat: build each entry once
def _int_entry(key, value):
    return _feature_entry(key, _INT64_LIST, _varint(int(value)))


def label_entries(ages, age_deviation):
    """{age: its records' age, age_histogram and age_range entries}, computed once per age.

    Runs in the main process (agetf.data.labels imports TensorFlow); workers get the table.
    """
    from agetf.data import labels

    return {age: (_int_entry("age", age)
                  + _feature_entry("age_histogram", _FLOAT_LIST,
                                   labels.age_histogram(age, age_deviation).astype("<f4").tobytes())
                  + _int_entry("age_range", labels.age_range(age)))
            for age in sorted(set(ages))}


def encode_example(*, jpeg, age_entries, gender, race, filename, height, width):
    """The serialized tf.train.Example of one face; age_entries comes from label_entries()."""
    features = (_feature_entry("image", _BYTES_LIST, jpeg) + age_entries
                + _int_entry("gender", gender) + _int_entry("race", race)
                + _feature_entry("filename", _BYTES_LIST, filename.encode("utf-8"))
                + _int_entry("height", height) + _int_entry("width", width))
    return _length_delimited(1, features)


# --- image checking and encoding (runs in worker processes) ---------------------------

def check_image(path):
    """Reads and decodes one file: returns (reason, height, width, jpeg).

    reason is None for a usable image, and jpeg then holds the bytes to store: the file's
    own for a valid RGB JPEG, else the image re-encoded as an RGB JPEG (image_files.rgb_jpeg,
    without limits); else it is one of image_files' REASON_* strings.
    """
    try:
        jpeg, width, height = image_files.rgb_jpeg(path, image_files.read_file(path),
                                                   max_pixels=None)
    except image_files.ImageReadError as error:
        return error.reason, 0, 0, None
    return None, height, width, jpeg


def encode_face(candidate, age_entries_by_age):
    """(reason, height, width, serialized record or None) of one candidate file."""
    reason, height, width, jpeg = check_image(candidate.path)
    if reason:
        return reason, 0, 0, None
    labels = candidate.labels
    return None, height, width, encode_example(
        jpeg=jpeg, age_entries=age_entries_by_age[labels.age], gender=labels.gender,
        race=labels.race, filename=candidate.file_name, height=height, width=width)


_worker_age_entries = None  # each worker's copy of the label_entries() table


def _start_worker(age_entries_by_age):
    global _worker_age_entries
    _worker_age_entries = age_entries_by_age


def _encode_batch(candidates):
    return [encode_face(candidate, _worker_age_entries) for candidate in candidates]


BATCH_SIZE = 32  # candidates per worker task: few enough round trips, results flow steadily
BATCHES_IN_FLIGHT_PER_WORKER = 4


def max_in_flight(workers):
    """Most candidates handed to workers and not yet written: what bounds the memory."""
    return workers * BATCHES_IN_FLIGHT_PER_WORKER * BATCH_SIZE


def _batches(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_all(candidates, age_entries_by_age, workers):
    """encode_face over an iterable of candidates, taken lazily; yields results in order.

    With workers > 1 it runs in spawned processes with at most max_in_flight(workers)
    candidates submitted and not yet yielded, so the encoded images held at once do not
    grow with the dataset (Pool.imap would queue every task, and every result the writer
    has not taken yet).
    """
    if workers <= 1:
        for candidate in candidates:
            yield encode_face(candidate, age_entries_by_age)
        return
    # spawn, not fork: the caller may have TensorFlow's threads and locks live.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(age_entries_by_age,)) as pool:
        pending = collections.deque()
        for batch in _batches(candidates, BATCH_SIZE):
            pending.append(pool.apply_async(_encode_batch, (batch,)))
            if len(pending) >= workers * BATCHES_IN_FLIGHT_PER_WORKER:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


# --- progress -------------------------------------------------------------------------

class _Progress:
    """The conversion's bar (agetf.common.progress: tqdm, on a terminal only, so no carriage-return
    bars end up in log files); `enabled` False (--noprogress) never draws it."""

    def __init__(self, label, total, enabled):
        from agetf.common import progress

        self.done, self.total = 0, total  # counted here too: a hidden tqdm bar counts nothing
        self.bar = progress.progress_bar(total, label, "images", show=None if enabled else False)

    def add(self, count):
        self.done += count
        self.bar.update(count)

    def close(self):
        self.bar.close()


# --- writing --------------------------------------------------------------------------

class _SplitWriter:
    """Writes one split's records, as they arrive, into num_shards temporary files.

    Its candidates arrive in a pseudo-random order (_order_for_writing), so consecutive
    blocks are as mixed as any: candidate j of n goes to shard j * num_shards // n, and one
    file is open at a time. A skipped image leaves its shard one record shorter.
    """

    def __init__(self, folder, split, num_candidates, num_shards):
        self.folder, self.split = folder, split
        self.num_candidates, self.num_shards = num_candidates, num_shards
        self.seen, self.lengths, self.paths, self._writer = 0, [], [], None

    def add(self, record):
        """Takes the next candidate's record, or None when that candidate was skipped."""
        shard = self.seen * self.num_shards // self.num_candidates
        self.seen += 1
        while len(self.paths) <= shard:
            self._open_next()
        if record is not None:
            self._writer.write(record)
            self.lengths[shard] += 1

    def _open_next(self):
        import tensorflow as tf

        self.close()
        self.paths.append(os.path.join(self.folder, f"{self.split}-{len(self.paths):05d}"))
        self.lengths.append(0)
        self._writer = tf.io.TFRecordWriter(self.paths[-1])

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def publish(self, output_dir, dataset_name):
        """Renames the non-empty shards to their final names in output_dir; returns (lengths, bytes)."""
        self.close()
        kept = [(path, length) for path, length in zip(self.paths, self.lengths) if length]
        num_bytes = 0
        for index, (path, _) in enumerate(kept):
            final = os.path.join(output_dir, shard_name(dataset_name, self.split, index, len(kept)))
            num_bytes += os.path.getsize(path)
            os.replace(path, final)
        for path, length in zip(self.paths, self.lengths):
            if not length:
                os.remove(path)  # every image in it was skipped: no empty shard is published
        return [length for _, length in kept], num_bytes


def _is_dataset_file(entry):
    """Whether a name in the output folder is a dataset's shard or metadata file."""
    return (entry in METADATA_FILES or entry.endswith(".labels.txt")
            or bool(SHARD_FILE.search(entry)))


def _start_incomplete(output_dir):
    """A fresh temporary folder for the new dataset, in the output folder; removes an
    interrupted run's. Returns its path."""
    incomplete = os.path.join(output_dir, INCOMPLETE_DIR)
    if os.path.isdir(incomplete):
        shutil.rmtree(incomplete)
    os.makedirs(incomplete)
    return incomplete


# --- one conversion per output folder, and the dataset swapped in whole ------------------

def _lock_output(config, output):
    """Creates the output folder if needed and takes its conversion lock; a ConversionError
    naming the conversion that holds it (pid, host) and the fix."""
    path = os.path.join(output, LOCK_FILE)
    try:
        os.makedirs(output, exist_ok=True)
        lock = run_lock.hold(path, "converting")
    except OSError as error:
        raise ConversionError(f"cannot write in output directory {config.output_dir} "
                              f"({error.strerror}); choose a folder you can write") from None
    if lock is None:
        description, pid = run_lock.holder(path)
        raise ConversionError(
            f"output directory {config.output_dir} is in use by another conversion ({description}; "
            f"lock file {path}); wait for it to finish, or stop it (kill {pid} on its host) and "
            "rerun, or choose another --output_dir")
    return lock


def _swap_path(output):
    parent, name = os.path.split(output)
    return os.path.join(parent, f".{name}{SWAP_SUFFIX}")


_AT_FDCWD = -100  # Linux's "relative to the working directory"
_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(path_a, path_b):
    """Swaps two folders in one step (Linux renameat2 RENAME_EXCHANGE); OSError where the
    system or the file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available on this system")
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(path_a), _AT_FDCWD, os.fsencode(path_b), _RENAME_EXCHANGE):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path_a)


def _swap_in(staged, output):
    """Puts the complete dataset built in `staged` (OUTPUT/.incomplete) in place of the output
    folder's in one step: a kill at any moment leaves the old dataset or the new one, whole.

    The staged folder gets hard links to the output folder's other files, the lock file among
    them (so the lock held stays the lock of the output folder), moves beside it and is swapped
    with it (_exchange); the output folder's other folders then move into the new one, and the
    old one is deleted. Where the file system cannot swap folders (not Linux, a mount point, a
    parent folder this user cannot write), the files are replaced in place, with a warning.
    """
    swap = _swap_path(output)
    folders = []
    try:
        for entry in os.listdir(output):
            path = os.path.join(output, entry)
            if entry == INCOMPLETE_DIR or _is_dataset_file(entry):
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                folders.append(entry)
            else:
                os.link(path, os.path.join(staged, entry), follow_symlinks=False)
        os.chmod(staged, stat.S_IMODE(os.stat(output).st_mode))
        os.rename(staged, swap)
    except OSError as error:
        return _replace_in_place(staged, output, error)
    try:
        _exchange(swap, output)
    except OSError as error:
        os.rename(swap, staged)
        return _replace_in_place(staged, output, error)
    for entry in folders:
        os.rename(os.path.join(swap, entry), os.path.join(output, entry))
    shutil.rmtree(swap)


def _replace_in_place(staged, output, error):
    """The fallback of _swap_in: removes the previous dataset's files, then moves the new ones
    in, metadata last (a kill in between leaves an incomplete dataset until a rerun)."""
    print(f"warning: cannot swap the new dataset into {output} in one step ({error.strerror}); "
          "replacing its files in place", file=sys.stderr, flush=True)
    for entry in os.listdir(output):
        if _is_dataset_file(entry):
            os.remove(os.path.join(output, entry))
    entries = [entry for entry in os.listdir(staged) if _is_dataset_file(entry)]
    for entry in sorted(entries, key=lambda entry: (not SHARD_FILE.search(entry),
                                                    entry == "dataset_info.json")):
        os.replace(os.path.join(staged, entry), os.path.join(output, entry))
    shutil.rmtree(staged)  # what is left are hard links to the output folder's own files


def _finish_interrupted_swap(output):
    """After a conversion killed inside _swap_in: moves the output folder's own folders back
    from the folder beside it, then deletes that folder (an unused new dataset, or the old one)."""
    swap = _swap_path(output)
    if os.path.islink(swap) or not os.path.isdir(swap):
        return
    for entry in os.listdir(swap):
        path = os.path.join(swap, entry)
        if (os.path.isdir(path) and not os.path.islink(path) and not _is_dataset_file(entry)
                and not os.path.lexists(os.path.join(output, entry))):
            os.rename(path, os.path.join(output, entry))
    shutil.rmtree(swap)


def _remove_created_output(output):
    """Removes an output folder this conversion created and left without a dataset."""
    incomplete = os.path.join(output, INCOMPLETE_DIR)
    if os.path.isdir(incomplete):
        shutil.rmtree(incomplete)
    with contextlib.suppress(OSError):
        os.remove(os.path.join(output, LOCK_FILE))
        os.rmdir(output)


def _write_metadata(folder, shard_lengths, split_bytes):
    """dataset_info.json + features.json, so tfds.builder_from_directory loads the folder."""
    import tensorflow_datasets as tfds

    from agetf.data import schema

    split_infos = [
        tfds.core.SplitInfo(name=split, shard_lengths=shard_lengths[split], num_bytes=split_bytes[split])
        for split in SPLITS if shard_lengths[split]
    ]
    tfds.folder_dataset.write_metadata(
        data_dir=folder, features=schema.tfds_features(), split_infos=split_infos,
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


def _file_size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _plan_shards(candidates, config):
    """{split: shard count}, sized from the source files before any is decoded (writing
    starts at once; re-encoded or skipped files change the real sizes a little)."""
    counts, sizes = dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0)
    for candidate in candidates:
        counts[candidate.split] += 1
        sizes[candidate.split] += _file_size(candidate.path)
    return counts, {split: count_shards(counts[split], sizes[split], config) for split in SPLITS}


def convert(config):
    """Runs a whole conversion; returns the report dict (also written as conversion_report.json).

    Raises ConversionError for a bad setting or input, or while another conversion writes into
    the same output folder, leaving the output folder as it was.
    """
    config = dataclasses.replace(config, input_dirs=[os.fspath(d) for d in config.input_dirs],
                                 output_dir=os.fspath(config.output_dir))
    validate_config(config)
    output = os.path.realpath(config.output_dir)  # the folder swapped, not a link to it
    created_output = not os.path.isdir(output)
    lock = _lock_output(config, output)
    try:
        _finish_interrupted_swap(output)
        # Again, now that no other conversion can write there: one may have just finished.
        _refuse_a_full_output_without_overwrite(config)
        return _convert_locked(config, output)
    except ConversionError:
        if created_output:
            _remove_created_output(output)
        raise
    finally:
        lock.release()


def _convert_locked(config, output):
    start = time.monotonic()
    workers = config.workers or _available_cores()
    plan = read_split_files(config.split_file, config.split_ratios) if config.split_file else None
    split_map = plan.splits if plan else None
    paths = list_files(config.input_dirs)
    # A partial copy of the dataset silently gives another split: name what is missing.
    missing = sorted(set(split_map) - {os.path.basename(p) for p in paths}) if split_map else []
    candidates, skipped = collect_candidates(paths, config.split_ratios, split_map)
    candidates = _order_for_writing(candidates)
    num_candidates, num_shards = _plan_shards(candidates, config)
    age_entries = label_entries([c.labels.age for c in candidates], config.age_deviation)
    import tensorflow as tf  # noqa: F401  (imported before the bar starts, so its rate is honest)

    incomplete = _start_incomplete(output)
    writers = {split: _SplitWriter(incomplete, split, num_candidates[split], num_shards[split])
               for split in SPLITS}
    kept_names = {split: [] for split in SPLITS}
    noted = {}  # {note: [file names]} of kept files whose odd names still parsed
    image_sizes = {split: {} for split in SPLITS}
    progress = _Progress("converting", len(candidates), config.show_progress)
    with contextlib.closing(encode_all(candidates, age_entries, workers)) as results:
        for candidate, (reason, height, width, record) in zip(candidates, results):
            writers[candidate.split].add(record)
            if reason:
                skipped.append((candidate.path, reason))
            else:
                kept_names[candidate.split].append(candidate.file_name)
                for note in candidate.notes:
                    noted.setdefault(note, []).append(candidate.file_name)
                sizes = image_sizes[candidate.split]
                sizes[f"{height}x{width}"] = sizes.get(f"{height}x{width}", 0) + 1
            progress.add(1)
    progress.close()
    for writer in writers.values():
        writer.close()
    if not kept_names["train"]:
        shutil.rmtree(incomplete)
        reasons = ", ".join(sorted({reason for _, reason in skipped})) or "none found"
        raise ConversionError(f"no usable training image in {', '.join(config.input_dirs)} "
                              f"({len(skipped)} skipped: {reasons}); check --input_dir")

    # The whole new dataset is built beside the old one, which stays until the swap.
    shard_lengths, split_bytes = {}, {}
    for split in SPLITS:
        shard_lengths[split], split_bytes[split] = writers[split].publish(incomplete, config.dataset_name)
    _write_metadata(incomplete, shard_lengths, split_bytes)
    if config.write_split_file:
        write_split_file(os.path.join(incomplete, SPLIT_FILE), kept_names)
    image_sizes = {split: dict(sorted(sizes.items())) for split, sizes in image_sizes.items()}
    report = _write_report(config, shard_lengths, skipped, start, plan, image_sizes, missing, noted,
                           folder=incomplete)
    _swap_in(incomplete, output)
    return report


def _split_settings(config, plan, missing):
    """The report's settings about how files were split."""
    ratios = ",".join(f"{ratio:g}" for ratio in config.split_ratios)
    per_split = plan is not None and ONE_SPLIT_FILE not in plan.files
    missing_by_file = None
    if per_split:
        missing_by_file = {source: 0 for source in plan.files if source in SPLITS}
        for file_name in missing:
            missing_by_file[plan.listed_in[file_name]] += 1
    return {
        "split_method": plan.method if plan else f"SHA-1 hash of the file name against --split_ratios={ratios}",
        "split_file": (None if plan is None else plan.files[ONE_SPLIT_FILE] if not per_split
                       else {source: plan.files[source] for source in SPLITS if source in plan.files}),
        "split_file_rows": sum(plan.rows.values()) if plan else None,
        "split_file_rows_by_file": dict(plan.rows) if per_split else None,
        "split_file_validation_share": plan.validation_share if plan else None,
        "split_file_age_check": plan.age_check if plan else None,
        "split_file_missing": list(missing),
        "split_file_missing_by_file": missing_by_file,
    }


def _write_report(config, shard_lengths, skipped, start, plan=None, image_sizes=None,
                  missing_from_split_file=(), noted=None, folder=None):
    """Writes conversion_report.json into `folder` (default: the output folder) atomically and
    returns its contents."""
    from agetf.data import labels, schema

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
    lines += [f"  {split:<10} {report['counts'][split]:>7} images in {report['settings']['shards'][split]} shards"
              for split in SPLITS]
    lines += [f"  skipped: {count} x {reason}" for reason, count in report["skipped_by_reason"].items()]
    lines += [f"  kept with a note: {item['count']} x {note}"
              for note, item in report.get("kept_with_notes", {}).items()]
    settings = report["settings"]
    missing = settings.get("split_file_missing")
    if missing:
        by_file = settings.get("split_file_missing_by_file")
        where = "".join(f"{source}= {count}, " for source, count in (by_file or {}).items())
        lines.append(f"  warning: {len(missing)} files of the split file{'s' if by_file else ''} are "
                     f"not in the input ({where}e.g. {missing[0]}); the split differs from the "
                     "published one unless they were left out on purpose")
    return "\n".join(lines)
