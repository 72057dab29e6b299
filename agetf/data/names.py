"""Labels from face file names: UTKFace's and the older project's.

UTKFace: `[age]_[gender]_[race]_[datetime].jpg`, the aligned set adds `.chip.jpg`.
Older project: `<id>_<age>_<gender>.jpg`. Only the base name is read, never the folder.
Real UTKFace has a few malformed names; each either parses unambiguously here or is
rejected with one of the short, stable REASON_* strings, which the converter counts.
A name that parses but is not quite well formed (no race field, a missing dot, a stray
space, a datetime of another length) also gets NOTE_* strings, which the converter
lists in its report beside the files it kept.
"""

import dataclasses
import os
import re

MAX_AGE = 116  # oldest age in UTKFace
NUM_RACES = 5
UNKNOWN_RACE = -1

REASON_NOT_IMAGE_NAME = "name has no image extension"
REASON_EMPTY_FIELD = "empty name field (doubled underscore)"
REASON_UNRECOGNIZED = "name matches no known pattern"
REASON_AGE = f"age outside 0-{MAX_AGE}"
REASON_GENDER = "gender not 0 or 1"
REASON_RACE = "race not 0-4"
REASONS = (REASON_NOT_IMAGE_NAME, REASON_EMPTY_FIELD, REASON_UNRECOGNIZED,
           REASON_AGE, REASON_GENDER, REASON_RACE)

# Oddities of names that still parse unambiguously (all seen in the real UTKFace).
NOTE_NO_RACE = "race unknown: the name has no race field"
NOTE_NO_DOT = "a dot is missing before jpg or chip.jpg (read as if it were there)"
NOTE_SPACE = "a space before the extension (ignored)"
NOTE_DATETIME_DIGITS = "datetime field not 17 digits (labels unaffected)"
NOTES = (NOTE_NO_RACE, NOTE_NO_DOT, NOTE_SPACE, NOTE_DATETIME_DIGITS)

# The stem, then stray spaces, an optional dot (one real name lacks it), the extension in
# any case, and the aligned set's optional `.chip.jpg` (one real name lacks its dot too).
_NAME = re.compile(r"^(?P<stem>.*?)(?P<space>\s*)(?P<dot>\.?)(?:jpe?g|png)"
                   r"(?:(?P<chip_dot>\.?)(?P<chip>chip)\.jpe?g)?$", re.IGNORECASE)
# UTKFace's datetime field is 17 digits; an id or a label is never this long.
_DATETIME_MIN_DIGITS = 10
_DATETIME_DIGITS = 17


@dataclasses.dataclass(frozen=True)
class FaceLabels:
    """Labels of one face: age in years, gender (0 male, 1 female), race (0-4, -1 unknown).

    A manifest (agetf.data.manifest) may also give -1 for an unknown age or gender, an
    inclusive age range (age_min, age_max; age is then its middle, rounded down) and a
    sample weight; a file name never does.
    """

    age: int
    gender: int
    race: int = UNKNOWN_RACE
    age_min: int | None = None  # None: the age is exact (or unknown)
    age_max: int | None = None
    weight: float = 1.0


class UnparseableName(ValueError):
    """A file name that yields no labels; `reason` is one of REASONS."""

    def __init__(self, file_name, reason):
        super().__init__(f"{file_name}: {reason}")
        self.file_name = file_name
        self.reason = reason


def _is_datetime(field):
    return field.isdigit() and len(field) >= _DATETIME_MIN_DIGITS


def _is_label(field):
    return field.isdigit() and len(field) < _DATETIME_MIN_DIGITS


def _fields_to_labels(fields):
    """Maps the underscore-separated fields to ((age, gender, race) strings, the
    UTKFace datetime field or None), or None."""
    if len(fields) == 4 and _is_datetime(fields[3]) and all(map(_is_label, fields[:3])):
        return (fields[0], fields[1], fields[2]), fields[3]  # UTKFace
    if len(fields) == 3 and _is_datetime(fields[2]) and all(map(_is_label, fields[:2])):
        return (fields[0], fields[1], None), fields[2]  # UTKFace without its race field
    if len(fields) == 3 and _is_label(fields[1]) and _is_label(fields[2]):
        return (fields[1], fields[2], None), None  # older project: <id>_<age>_<gender>
    return None


def parse_face_name(path):
    """Returns the FaceLabels in a file's base name; raises UnparseableName with a reason."""
    return parse_face_name_with_notes(path)[0]


def parse_face_name_with_notes(path):
    """(FaceLabels, notes): notes is a tuple of the NOTES the base name earns, empty for a
    well-formed name. Raises UnparseableName with a reason."""
    file_name = os.path.basename(path)
    match = _NAME.match(file_name)
    if not match:
        raise UnparseableName(file_name, REASON_NOT_IMAGE_NAME)
    fields = match.group("stem").split("_")
    if "" in fields:
        raise UnparseableName(file_name, REASON_EMPTY_FIELD)
    parsed = _fields_to_labels(fields)
    if parsed is None:
        raise UnparseableName(file_name, REASON_UNRECOGNIZED)
    labels, datetime_field = parsed
    age, gender, race = (None if field is None else int(field) for field in labels)
    if not 0 <= age <= MAX_AGE:
        raise UnparseableName(file_name, REASON_AGE)
    if gender not in (0, 1):
        raise UnparseableName(file_name, REASON_GENDER)
    if race is None:
        race = UNKNOWN_RACE
    elif not 0 <= race < NUM_RACES:
        raise UnparseableName(file_name, REASON_RACE)
    notes = []
    if datetime_field is not None and labels[2] is None:
        notes.append(NOTE_NO_RACE)  # the older project's names never had one: no note there
    if not match.group("dot") or (match.group("chip") and not match.group("chip_dot")):
        notes.append(NOTE_NO_DOT)
    if match.group("space"):
        notes.append(NOTE_SPACE)
    if datetime_field is not None and len(datetime_field) != _DATETIME_DIGITS:
        notes.append(NOTE_DATETIME_DIGITS)
    return FaceLabels(age=age, gender=gender, race=race), tuple(notes)
