"""Labels from face file names: UTKFace's and the older project's.

UTKFace: `[age]_[gender]_[race]_[datetime].jpg`, the aligned set adds `.chip.jpg`.
Older project: `<id>_<age>_<gender>.jpg`. Only the base name is read, never the folder.
Real UTKFace has a few malformed names; each either parses unambiguously here or is
rejected with one of the short, stable REASON_* strings, which the converter counts.
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
REASON_AGE = "age outside 0-116"
REASON_GENDER = "gender not 0 or 1"
REASON_RACE = "race not 0-4"
REASONS = (REASON_NOT_IMAGE_NAME, REASON_EMPTY_FIELD, REASON_UNRECOGNIZED,
           REASON_AGE, REASON_GENDER, REASON_RACE)

# The stem, then stray spaces, an optional dot (one real name lacks it), the extension in
# any case, and the aligned set's optional `.chip.jpg` (one real name lacks its dot too).
_NAME = re.compile(r"^(?P<stem>.*?)\s*\.?(?:jpe?g|png)(?:\.?chip\.jpe?g)?$", re.IGNORECASE)
# UTKFace's datetime field is 17 digits; an id or a label is never this long.
_DATETIME_MIN_DIGITS = 10


@dataclasses.dataclass(frozen=True)
class FaceLabels:
    """Labels of one face: age in years, gender (0 male, 1 female), race (0-4, -1 unknown)."""

    age: int
    gender: int
    race: int = UNKNOWN_RACE


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
    """Maps the underscore-separated fields to (age, gender, race) strings, or None."""
    if len(fields) == 4 and _is_datetime(fields[3]) and all(map(_is_label, fields[:3])):
        return fields[0], fields[1], fields[2]  # UTKFace
    if len(fields) == 3 and _is_datetime(fields[2]) and all(map(_is_label, fields[:2])):
        return fields[0], fields[1], None  # UTKFace without its race field
    if len(fields) == 3 and _is_label(fields[1]) and _is_label(fields[2]):
        return fields[1], fields[2], None  # older project: <id>_<age>_<gender>
    return None


def parse_face_name(path):
    """Returns the FaceLabels in a file's base name; raises UnparseableName with a reason."""
    file_name = os.path.basename(path)
    match = _NAME.match(file_name)
    if not match:
        raise UnparseableName(file_name, REASON_NOT_IMAGE_NAME)
    fields = match.group("stem").split("_")
    if "" in fields:
        raise UnparseableName(file_name, REASON_EMPTY_FIELD)
    labels = _fields_to_labels(fields)
    if labels is None:
        raise UnparseableName(file_name, REASON_UNRECOGNIZED)
    age, gender, race = (None if field is None else int(field) for field in labels)
    if not 0 <= age <= MAX_AGE:
        raise UnparseableName(file_name, REASON_AGE)
    if gender not in (0, 1):
        raise UnparseableName(file_name, REASON_GENDER)
    if race is None:
        race = UNKNOWN_RACE
    elif not 0 <= race < NUM_RACES:
        raise UnparseableName(file_name, REASON_RACE)
    return FaceLabels(age=age, gender=gender, race=race)
