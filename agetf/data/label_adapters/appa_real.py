"""APPA-REAL (Agustsson et al., 2017): gt_avg_{train,valid,test}.csv beside the folders
train/, valid/, test/ of appa-real-release.

gt_avg_*.csv columns: file_name, num_ratings, apparent_age_avg, apparent_age_std, real_age.
Each image X.jpg has its face crop X.jpg_face.jpg (rotated, 40% margin), which is what is
converted. allcategories_*.csv (file, gender, race, makeup, time, happiness), where present,
gives the gender. The release's own split is kept (valid = validation).
"""

import csv
import os

from agetf.data import manifest
from agetf.data.label_adapters import csv_files, labels_path

SPLITS = {"gt_avg_train.csv": "train", "gt_avg_valid.csv": "validation",
          "gt_avg_test.csv": "test"}
FOLDERS = {"train": "train", "validation": "valid", "test": "test"}
FACE_SUFFIX = "_face.jpg"


def _genders(folder, split):
    path = os.path.join(folder, f"allcategories_{FOLDERS[split]}.csv")
    if not os.path.isfile(path):
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        return {row["file"]: row["gender"] for row in csv.DictReader(f)}


def rows(config):
    """Rows of --labels (a gt_avg_*.csv, or the folder holding them; default: INPUT_DIR):
    real_age, or the rounded apparent_age_avg with --apparent_age."""
    path = labels_path(config, ".")
    for split, csv_path in csv_files(path, SPLITS, "gt_avg_*.csv files"):
        split = split or "train"
        genders = _genders(os.path.dirname(csv_path), split)
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for record in reader:
                if config.apparent_age:
                    try:
                        age = str(round(float(record["apparent_age_avg"])))
                    except ValueError:
                        age = record["apparent_age_avg"]  # the manifest's check names it
                else:
                    age = record["real_age"]
                name = record["file_name"]
                yield manifest.Row(line=reader.line_num, labels_file=csv_path,
                                   file=f"{FOLDERS[split]}/{name}{FACE_SUFFIX}", age=age,
                                   gender=genders.get(name, ""), split=split)
