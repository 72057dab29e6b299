"""IMDB-WIKI's imdb.mat / wiki.mat (Rothe, Timofte and Van Gool, "DEX", 2015-2018).

The .mat holds one struct (imdb or wiki) whose fields are 1xN arrays: full_path (the image
under imdb_crop/ or wiki_crop/), dob (birth date, a Matlab serial date number), photo_taken
(the year), face_score (-inf: no face found), second_face_score (NaN: no second face) and
gender (0 female, 1 male, NaN unknown). Age is taken at mid-year, as its authors do:
photo_taken minus the birth year, one less for a birthday from July on.
"""

import datetime
import math

from agetf.data import manifest
from agetf.data.label_adapters import labels_path

MATLAB_ORDINAL_OFFSET = 366  # datenum counts from year 0, Python's ordinals from year 1
REASON_FACE_SCORE = "face score below --min_face_score"
REASON_SECOND_FACE = "a second face in the photo"
REASON_IMPOSSIBLE_AGE = f"impossible age (photo year minus birth year outside 0-{manifest.MAX_AGE})"


def age_at_mid_year(dob, photo_taken):
    """Age in whole years on 1 July of photo_taken, of a Matlab datenum birth date."""
    birth = datetime.date.fromordinal(max(int(dob) - MATLAB_ORDINAL_OFFSET, 1))
    return int(photo_taken) - birth.year - (1 if birth.month >= 7 else 0)


def _gender(value):
    return "" if math.isnan(value) else "m" if value == 1 else "f"


def _skip(face_score, second_face_score, age, min_face_score):
    if not face_score >= min_face_score:
        return REASON_FACE_SCORE
    if not math.isnan(second_face_score):
        return REASON_SECOND_FACE
    if not 0 <= age <= manifest.MAX_AGE:
        return REASON_IMPOSSIBLE_AGE
    return None


def rows(config):
    """Rows of --labels=imdb.mat or wiki.mat (default: INPUT_DIR/imdb.mat); line = entry
    number, from 1."""
    from scipy.io import loadmat  # only this adapter needs scipy

    path = labels_path(config, "imdb.mat")
    mat = loadmat(path)
    key = next(name for name in mat if not name.startswith("__"))
    meta = mat[key][0, 0]
    columns = [meta[field][0] for field in ("full_path", "dob", "photo_taken", "face_score",
                                            "second_face_score", "gender")]
    for index, (full_path, dob, taken, score, second, gender) in enumerate(zip(*columns)):
        age = age_at_mid_year(dob, taken)
        skip = _skip(float(score), float(second), age, config.min_face_score)
        yield manifest.Row(line=index + 1, labels_file=path, file=str(full_path[0]),
                           age=age if skip is None else None, gender=_gender(float(gender)),
                           skip=skip)
