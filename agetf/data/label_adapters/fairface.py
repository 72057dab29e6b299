"""FairFace (Karkkainen and Joo, 2021): fairface_label_train.csv and fairface_label_val.csv
beside the train/ and val/ image folders.

Columns: file (e.g. train/1.jpg), age (0-2, 3-9, 10-19, ..., 60-69, "more than 70"), gender
(Male, Female), race (7 groups, which agetf's 5 do not hold: left unknown), service_test.
The val file has no test twin: its faces become the test split (as the FairFace paper
evaluates on it); the train file's faces are split by the name hash.
"""

import csv

from agetf.data import manifest
from agetf.data.label_adapters import csv_files, labels_path

SPLITS = {"fairface_label_train.csv": None, "fairface_label_val.csv": "test"}
OPEN_AGE = "more than 70"


def rows(config):
    """Rows of --labels (one label CSV, or the folder holding both; default: INPUT_DIR)."""
    path = labels_path(config, ".")
    for split, csv_path in csv_files(path, SPLITS, "FairFace label files"):
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for record in reader:
                age = record.get("age") or ""
                yield manifest.Row(line=reader.line_num, labels_file=csv_path,
                                   file=record["file"],
                                   age="70+" if age.strip().lower() == OPEN_AGE else age,
                                   gender=record.get("gender") or "", split=split)
