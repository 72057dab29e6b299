"""Which split each face file goes to: the stable hash of its name (assign_split), or a
published split file (read_split_files), and the splits.csv that records a conversion's.

A split file is one CSV of `file name,split` rows (e.g. another conversion's splits.csv), or
one CSV per split with a `file` column, "train=TRAIN.csv,test=TEST.csv" (e.g. the CORAL
split's). Every problem with one is a one-line ConversionError naming the row and the fix.
"""

import csv
import dataclasses
import hashlib
import io
import os

from agetf.common import files
from agetf.data import names
from agetf.data.convert_config import ConversionError, ConvertConfig, format_split_ratios
from agetf.data.dataset_files import SPLITS

SPLIT_FILE = "splits.csv"  # file name, split: written with write_split_file, read with split_file


def name_hash(file_name, salt):
    """A stable number in [0, 1) from a file's base name; `salt` gives another draw."""
    digest = hashlib.sha1(f"{salt}:{file_name}".encode("utf-8")).hexdigest()
    return int(digest[:15], 16) / float(16 ** 15)


def assign_split(file_name, split_ratios=ConvertConfig.split_ratios):
    """The split of a file, from a stable hash of its base name: adding files never moves it."""
    position = name_hash(file_name, "split")
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
    """Which CSV files a --split_file value names.

    Args:
      text: one CSV's path, or "train=A.csv,test=B.csv[,validation=C.csv]". An existing
        file wins, so a path holding '=' still reads as one file.

    Returns:
      {ONE_SPLIT_FILE: path} for one CSV, else {split: path}; each path's ~ expanded.

    Raises:
      ConversionError: an unknown or repeated split, a part without a file, no train= file.
    """
    text = text.strip()
    head = text.split("=", 1)[0]
    if os.path.isfile(os.path.expanduser(text)) or "=" not in text or os.sep in head:
        return {ONE_SPLIT_FILE: os.path.expanduser(text)}
    files = {}
    for part in text.split(","):
        split, equals, path = (item.strip() for item in part.partition("="))
        if not equals or not split:
            raise ConversionError(f"--split_file part {part.strip()!r} is not SPLIT=FILE; "
                                  f"{_SPLIT_SPEC_HELP}")
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
    """The rows of one per-split CSV.

    Args:
      path: a CSV with a header naming a `file` (or `filename`) column and optionally an
        `age` column, like the CORAL split's ',file,age'.
      option: how messages name the file, e.g. "--split_file train=A.csv".

    Returns:
      [(row number, file base name, age column or None)].

    Raises:
      ConversionError: an unreadable file, no `file` column, a row without a file name or
        with an age that is not a whole number, or no row.
    """
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
                raise ConversionError(
                    f"{option} row {number} {row!r}: age {cell!r} is not a whole number; "
                    "fix it or remove the age column") from None
        table.append((number, os.path.basename(row[column].strip()), age))
    if not table:
        raise ConversionError(f"{option} lists no file; {_SPLIT_SPEC_HELP}")
    return table


def check_age_column(table, option):
    """Checks a split file's age column against the ages in its file names: every row must
    hold the CORAL class (age - 21) or every row the age in years.

    Args:
      table: read_split_table's rows.
      option: how messages name the file.

    Returns:
      Which of the two it holds, in a sentence for the report.

    Raises:
      ConversionError: naming how many rows disagree under the closer reading, and one.
    """
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


def read_split_files(text, split_ratios=ConvertConfig.split_ratios):
    """The SplitPlan of a --split_file value; raises ConversionError (one line) for any
    problem with it.

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
                         files={ONE_SPLIT_FILE: os.path.abspath(path)},
                         rows={ONE_SPLIT_FILE: len(splits)},
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
                raise ConversionError(f"--split_file lists {file_name} in both "
                                      f"{listed_in[file_name]}= and {source}= (row {number}); "
                                      "keep it in one file")
            splits[file_name] = split
    parts = ["train= rows go to train"]
    if share is not None:
        ratios = format_split_ratios(split_ratios)
        parts[0] += (f", except validation: the train= rows whose SHA-1 file name hash falls in "
                     f"the top {share:.4f} (validation/(train+validation) of "
                     f"--split_ratios={ratios}, whose test share is unused)")
    parts += [f"{source}= rows go to {source}"
              for source in ("validation", "test") if source in files]
    method = ("per-split files: " + "; ".join(parts)
              + "; input files named in no split file are left out")
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
                                  "for one CSV per split, pass "
                                  "--split_file=train=TRAIN.csv,test=TEST.csv")
        name, split = os.path.basename(row[0].strip()), row[1].strip()
        if splits.setdefault(name, split) != split:
            raise ConversionError(f"--split_file={path} puts {name} in both {splits[name]} and "
                                  f"{split}; keep one row per file")
    if not splits:
        raise ConversionError(f"--split_file={path} lists no file; pass a CSV of file name, "
                              "split rows")
    return splits


def write_split_file(path, kept_names):
    """Writes `filename,split` rows of every kept file ({split: [file name]}), sorted by name,
    atomically."""
    rows = sorted((name, split) for split, file_names in kept_names.items() for name in file_names)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["filename", "split"])
    writer.writerows(rows)
    files.write_text(path, text.getvalue())


