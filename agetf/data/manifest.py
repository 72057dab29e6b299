"""Labels from a manifest: a CSV (with a header row) or JSON-lines file naming each image and
its labels, the alternative to labels in file names (agetf.data.names).

Columns: `file` (the image's path under the input folder; required), `age` (whole years `34`,
an inclusive range `30-39`, `(25, 32)`, or `70+` = 70-100; may be empty), `gender`
(`female`/`f`/`1`, `male`/`m`/`0`, or empty), `race` (0-4 or empty), `split`
(`train`/`validation`/`test` or empty: the name hash decides) and `weight` (a positive sample
weight, default 1). The dataset adapters (agetf.data.label_adapters) write the same Rows.
A row that cannot be used is skipped with its line and reason; a file without a `file`
column, or with neither `age` nor `gender`, and a path leaving the input folder, refuse the
whole conversion before any image is read. No TensorFlow.
"""

import array
import csv
import json
import os
import re
import stat
import typing

from agetf.data import candidate_table, conversion_workers, names, split_files
from agetf.data.convert_config import ConversionError
from agetf.data.dataset_files import SPLITS
from agetf.data.record_fields import UNKNOWN

MAX_AGE = 100  # a manifest's ages and ranges lie in 0-100 (labels.MAX_AGE_BIN)
COLUMNS = ("file", "age", "gender", "race", "split", "weight")
LABEL_COLUMNS = ("age", "gender")  # a manifest needs at least one of them
GENDERS = {"male": 0, "m": 0, "0": 0, "female": 1, "f": 1, "1": 1, "": UNKNOWN}

REASON_NO_FILE = candidate_table.REASON_NO_FILE
REASON_DUPLICATE = candidate_table.REASON_DUPLICATE
REASON_NO_PATH = "empty file column"
REASON_AGE = "age not whole years or a range (34, 30-39, 70+, (25, 32))"
REASON_AGE_OUTSIDE = f"age outside 0-{MAX_AGE}"
REASON_AGE_BACKWARDS = "age range ends before it starts"
REASON_GENDER = "unknown gender word (female, f, 1, male, m, 0 or empty)"
REASON_RACE = "race not 0-4"
REASON_SPLIT = "split not train, validation or test"
REASON_WEIGHT = "weight not a positive number"
REASONS = (REASON_NO_FILE, REASON_DUPLICATE, REASON_NO_PATH, REASON_AGE, REASON_AGE_OUTSIDE,
           REASON_AGE_BACKWARDS, REASON_GENDER, REASON_RACE, REASON_SPLIT, REASON_WEIGHT)

_EXACT = re.compile(r"^\d+$")
_RANGE = re.compile(r"^\(?\s*(\d+)\s*[-,]\s*(\d+)\s*\)?$")  # 30-39, (25, 32)
_OPEN = re.compile(r"^(\d+)\s*\+$")  # 70+
# A path normpath leaves as it is: no empty, "." or ".." part, no backslash, not absolute.
_PLAIN = re.compile(r"^(?!\.\.?(/|$))(?:[^/\\]+/(?!\.\.?(/|$)))*[^/\\]+$")


class Row(typing.NamedTuple):  # a tuple: made five times faster than a frozen dataclass
    """One face's labels as a manifest (or an adapter) gives them, not yet checked.

    Attributes:
      line: where it is: the line in labels_file (a CSV's header is line 1), or an adapter's
        entry number.
      labels_file: the file the row came from (its base name goes into the report).
      file: the image's path under the input folder, as written.
      age, gender, race, split, weight: the columns' values (str, a number, or None).
      skip: an adapter's reason to leave the face out (e.g. a low face score), or None.
    """

    line: int
    labels_file: str
    file: str
    age: object = None
    gender: object = None
    race: object = None
    split: object = None
    weight: object = None
    skip: str | None = None


class BadRow(ValueError):
    """A row whose labels cannot be used; the message is one of REASONS."""


def _text(value):
    if value is None or (isinstance(value, float) and value != value):  # None, NaN: empty
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def parse_age(value):
    """(age, age_min, age_max) of an age cell: an exact age has no bounds (None, None); a
    range's age is its middle rounded down; an empty cell gives (-1, None, None).

    Raises:
      BadRow: not an age, out of 0-MAX_AGE, or a backwards range.
    """
    text = _text(value)
    if not text:
        return UNKNOWN, None, None
    if _EXACT.match(text):
        age = int(text)
        if age > MAX_AGE:
            raise BadRow(REASON_AGE_OUTSIDE)
        return age, None, None
    match = _RANGE.match(text) or _OPEN.match(text)
    if not match:
        raise BadRow(REASON_AGE)
    low = int(match.group(1))
    high = int(match.group(2)) if match.re is _RANGE else MAX_AGE
    if low > MAX_AGE or high > MAX_AGE:
        raise BadRow(REASON_AGE_OUTSIDE)
    if low > high:
        raise BadRow(REASON_AGE_BACKWARDS)
    if low == high:
        return low, None, None
    return (low + high) // 2, low, high


def parse_gender(value):
    """0 male, 1 female, -1 unknown (empty); BadRow for any other word."""
    try:
        return GENDERS[_text(value).lower()]
    except KeyError:
        raise BadRow(REASON_GENDER) from None


def parse_race(value):
    text = _text(value)
    if not text:
        return names.UNKNOWN_RACE
    if not _EXACT.match(text) or int(text) >= names.NUM_RACES:
        raise BadRow(REASON_RACE)
    return int(text)


def parse_split(value):
    """A split name, or None (the name hash decides)."""
    text = _text(value).lower()
    if not text:
        return None
    if text not in SPLITS:
        raise BadRow(REASON_SPLIT)
    return text


def parse_weight(value):
    text = _text(value)
    if not text:
        return 1.0
    try:
        weight = float(text)
    except ValueError:
        raise BadRow(REASON_WEIGHT) from None
    if not 0 < weight < float("inf"):
        raise BadRow(REASON_WEIGHT)
    return weight


def row_labels(row):
    """(FaceLabels, split or None) of a row; raises BadRow."""
    age, age_min, age_max = parse_age(row.age)
    labels = names.FaceLabels(age=age, gender=parse_gender(row.gender), race=parse_race(row.race),
                              age_min=age_min, age_max=age_max, weight=parse_weight(row.weight))
    return labels, parse_split(row.split)


def check_columns(columns, path):
    """ConversionError (one line) for a header without `file`, or with neither age nor
    gender."""
    columns = [column for column in columns if column]
    if "file" not in columns:
        raise ConversionError(f"labels file {path} has no 'file' column (it has: "
                              f"{', '.join(columns) or 'nothing'}); name the image path column "
                              "'file'")
    if not any(column in columns for column in LABEL_COLUMNS):
        raise ConversionError(f"labels file {path} has neither an 'age' nor a 'gender' column; "
                              "add at least one")


def _normalized(header):
    return [(column or "").strip().lower() for column in header]


def _csv_rows(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = _normalized(next(reader, []))
        check_columns(header, path)
        # Each column's cell index, or None; looked up once, not per row (500,000 rows).
        where = [header.index(column) if column in header else None for column in COLUMNS]
        for cells in reader:
            if not any(cells):
                continue
            values = [cells[i] if i is not None and i < len(cells) else None for i in where]
            yield Row(reader.line_num, path, values[0] or "", *values[1:])


def _jsonl_rows(path):
    with open(path, encoding="utf-8-sig") as f:
        checked = False
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                values = json.loads(line)
            except json.JSONDecodeError as error:
                raise ConversionError(f"labels file {path} line {line_number} is not JSON "
                                      f"({error.msg}); write one object per line") from None
            if not isinstance(values, dict):
                raise ConversionError(f"labels file {path} line {line_number} is not a JSON "
                                      "object; write one {\"file\": ...} object per line")
            if not checked:  # the first object stands for the header
                check_columns(_normalized(values), path)
                checked = True
            values = {key.strip().lower(): value for key, value in values.items()}
            yield Row(line=line_number, labels_file=path, file=_text(values.get("file")),
                      **{column: values.get(column) for column in COLUMNS[1:]})


def read_rows(path):
    """The Rows of a .csv or .jsonl manifest, lazily; the header is checked on the first one.

    Raises:
      ConversionError: an unreadable file, another extension, or a bad header.
    """
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".csv", ".jsonl"):
        raise ConversionError(f"--labels={path} is neither .csv nor .jsonl; give a manifest "
                              "file, or name its layout with --labels_format")
    if not os.path.isfile(path):
        raise ConversionError(f"labels file {path} does not exist; check --labels")
    return _csv_rows(path) if extension == ".csv" else _jsonl_rows(path)


class PathResolver:
    """Turns a manifest's relative paths into paths under the input folder, refusing any that
    leave it (.., absolute, or through a link). Folders' real paths are cached: at 500,000 rows
    one realpath each would cost seconds."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.given_root = root
        self._folders = {}

    def _refuse(self, row, why):
        raise ConversionError(
            f"{os.path.basename(row.labels_file)} line {row.line}: file {row.file!r} {why}; "
            "give paths relative to --input_dir, inside it")

    def _inside(self, real):
        return real == self.root or real.startswith(self.root + os.sep)

    def resolve(self, row):
        """(path to read, normalized relative path) of a row; ConversionError for an escape."""
        relative = row.file
        if _PLAIN.fullmatch(relative) and relative.rpartition("/")[0] in self._folders:
            return os.path.join(self.given_root, relative), relative  # most rows: checked folder
        relative = relative.replace("\\", "/")
        if os.path.isabs(relative) or re.match(r"^[A-Za-z]:/", relative):
            self._refuse(row, "is an absolute path")
        relative = os.path.normpath(relative)
        if relative == ".." or relative.startswith("../"):
            self._refuse(row, "leaves the input folder")
        folder, _ = os.path.split(relative)
        real_folder = self._folders.get(folder)
        if real_folder is None:
            real_folder = os.path.realpath(os.path.join(self.root, folder))
            if not self._inside(real_folder):
                self._refuse(row, "leads out of the input folder through a link")
            self._folders[folder] = real_folder
        return os.path.join(self.given_root, relative), relative

    def check_link(self, row, path):
        """ConversionError when the file itself is a link leading out of the input folder."""
        if not self._inside(os.path.realpath(path)):
            self._refuse(row, "leads out of the input folder through a link")


class _LabelCache:
    """row_labels of the rows' label cells, each distinct tuple of cells parsed once (a few
    hundred tuples across 500,000 rows), so equal labels are also one FaceLabels object."""

    LIMIT = 65536  # distinct tuples kept; beyond (e.g. a weight per row) rows are parsed anew

    def __init__(self):
        self._found = {}

    def labels(self, row):
        """(FaceLabels, split or None) of a row; raises BadRow (its skip reason first)."""
        key = (row.skip, row.age, row.gender, row.race, row.split, row.weight)
        try:
            found = self._found.get(key)
        except TypeError:  # a JSON list or object in a cell: not hashable, parsed below
            key, found = None, None
        if found is None:
            try:
                if row.skip:
                    raise BadRow(row.skip)
                found = row_labels(row)
            except BadRow as error:
                found = error
            if key is not None and len(self._found) < self.LIMIT:
                self._found[key] = found
        if isinstance(found, BadRow):
            raise found
        return found


PROBE_CHUNK = 2048  # rows whose files one worker checks at a time (probe_files)
LINK = -3  # probe_files' size of a link: the main process checks where it leads


def probe_files(root, relatives, split_ratios):
    """What the serial pass needs of each file, computed in a converter worker while the main
    process reads on (Encoders.call_each): (sizes, splits, order hashes), arrays in the order
    of `relatives` (paths under root).

    sizes: the file's bytes, candidate_table.MISSING when there is no file, LINK for a link.
    splits: the index in SPLITS of its name-hash split (split_files.assign_split).
    order hashes: split_files.name_hash(relative, "order"), its place in writing order.
    """
    sizes, splits, orders = array.array("q"), bytearray(), array.array("d")
    for relative in relatives:
        try:
            status = os.lstat(os.path.join(root, relative))
        except OSError:
            sizes.append(candidate_table.MISSING)
        else:
            sizes.append(LINK if stat.S_ISLNK(status.st_mode) else status.st_size)
        splits.append(SPLITS.index(split_files.assign_split(relative, split_ratios)))
        orders.append(split_files.name_hash(relative, "order"))
    return sizes, splits, orders


def collect_candidates(rows, input_dir, split_ratios, helpers=None):
    """Checks every row's path and labels: (candidates, skipped).

    The main process reads the rows, resolves their paths and parses their labels; the
    helpers (the converter's idle workers) check chunks of their files meanwhile
    (probe_files).

    Args:
      rows: Rows, e.g. read_rows(path) or an adapter's.
      input_dir: the folder the rows' paths are relative to.
      split_ratios: the name-hash split's shares, for rows without a split.
      helpers: a conversion_workers.Encoders to check the files in; None: this process.

    Returns:
      A finished candidate_table.CandidateTable of conversion_workers.Candidates (file_name:
      the normalized relative path, which the records store and the hash split reads; close
      it when done), and skipped: [(path, reason, labels file, line)].

    Raises:
      ConversionError: a path leaving input_dir, or a bad manifest header.
    """
    resolver = PathResolver(input_dir)
    skipped = []
    table = candidate_table.CandidateTable(input_dir)
    helpers = helpers or conversion_workers.Encoders(1)
    try:
        calls = ((chunk, probe_files, (input_dir, [item[0] for item in chunk], split_ratios))
                 for chunk in _checked_rows(rows, resolver, skipped))
        for chunk, (sizes, splits, orders) in helpers.call_each(calls):
            for (relative, labels, split, where, row), size, split_index, order in zip(
                    chunk, sizes, splits, orders):
                if size == candidate_table.MISSING:
                    # Whether it is a repeated row instead, the table decides (the first wins).
                    split = split or SPLITS[0]
                elif size == LINK:
                    resolver.check_link(row, os.path.join(input_dir, relative))
                    size = None  # the link's own size: the table measures its target
                table.add(relative, labels, split or SPLITS[split_index], *where, size, order)
        skipped += table.finish()
    except BaseException:
        table.close()
        raise
    return table, skipped


def _checked_rows(rows, resolver, skipped):
    """Chunks of PROBE_CHUNK rows whose path and labels passed, as (relative path, labels,
    split or None, (labels file, line), row); the others are added to `skipped`."""
    cache, where_files, chunk = _LabelCache(), {}, []
    for row in rows:
        labels_file = where_files.get(row.labels_file)
        if labels_file is None:
            labels_file = where_files[row.labels_file] = os.path.basename(row.labels_file)
        if not row.file:
            skipped.append(("", REASON_NO_PATH, labels_file, row.line))
            continue
        path, relative = resolver.resolve(row)
        try:
            labels, split = cache.labels(row)
        except BadRow as error:
            skipped.append((path, str(error), labels_file, row.line))
            continue
        chunk.append((relative, labels, split, (labels_file, row.line), row))
        if len(chunk) == PROBE_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
