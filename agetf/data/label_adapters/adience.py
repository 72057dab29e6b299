"""Adience (Eidinger, Enbar and Hassner, 2014): fold_0_data.txt ... fold_4_data.txt beside the
aligned/ (or faces/) folder.

Fold files are tab-separated with a header: user_id, original_image, face_id, age, gender, x,
y, dx, dy, tilt_ang, fiducial_yaw_angle, fiducial_score. age is a range "(25, 32)", a number,
or "None"; gender m, f, u (unknown) or empty. An image is
USER_ID/landmark_aligned_face.FACE_ID.ORIGINAL_IMAGE under aligned/ (coarse_tilt_aligned_face
under faces/). Folds are for cross-validation, so the name hash splits them.
"""

import csv
import os

from agetf.data import manifest
from agetf.data.label_adapters import csv_files, labels_path

FOLDS = {f"fold_{k}_data.txt": None for k in range(5)}
PREFIXES = ("landmark_aligned_face", "coarse_tilt_aligned_face")
_UNKNOWN = ("none", "u", "")


def _file(input_dir, user_id, face_id, image):
    """The aligned image's path under input_dir: the first of PREFIXES that exists."""
    candidates = [f"{user_id}/{prefix}.{face_id}.{image}" for prefix in PREFIXES]
    for candidate in candidates:
        if os.path.exists(os.path.join(input_dir, candidate)):
            return candidate
    return candidates[0]  # skipped as not found


def rows(config):
    """Rows of --labels (a fold file, or the folder holding them; default: INPUT_DIR)."""
    path = labels_path(config, ".")
    input_dir = config.input_dirs[0]
    for _, fold in csv_files(path, FOLDS, "Adience fold files"):
        with open(fold, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t")
            for record in reader:
                age, gender = (record.get(key) or "" for key in ("age", "gender"))
                yield manifest.Row(
                    line=reader.line_num, labels_file=fold,
                    file=_file(input_dir, record["user_id"], record["face_id"],
                               record["original_image"]),
                    age="" if age.strip().lower() in _UNKNOWN else age,
                    gender="" if gender.strip().lower() in _UNKNOWN else gender)
