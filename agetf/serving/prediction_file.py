"""agetf.predict's --output file: one row per face, as CSV or JSON Lines (from the extension).

Both formats have the same flat columns (COLUMNS), so `pandas.read_csv(path)` and
`pandas.read_json(path, lines=True)` give the same table: the box and each landmark are
numeric columns of their own, not one encoded cell. Every input file has at least one row:
a face crop has one, a photo one per face found, and a photo without a face or a file that
could not be read one with `face` 0 (and the reason in `error`), so nothing goes missing.
The file is written whole under a temporary name and renamed (agetf.common.files.write_text): a
killed run leaves the old file or none, never part of one.
"""

import csv
import io
import json
import os
from typing import Iterable, Optional, Sequence

from agetf import UsageError
from agetf.common import files
from agetf.data import labels
from agetf.evaluation import prediction_text
from agetf.serving import crop_batches, face_alignment, photo_pipeline, predict_config

LANDMARK_COLUMNS = tuple(f"{name}_{axis}" for name in face_alignment.LANDMARK_NAMES
                         for axis in ("x", "y"))
# file: the input as given; face: the face's number in its file (1 for a crop; 0: none
# predicted, for a photo without a face or an unreadable file); box and landmarks in the
# photo's pixels, empty for crops; age_range its label ("25-30"); gender by
# agetf.evaluation.prediction_text's rule; true_age and true_gender from UTKFace-style file names;
# age_low and age_high the central age interval at agetf.predict's --interval, age_std the
# spread (empty for a regression-only model or a TFLite one);
# frame (from 0), time_s and track (from 1) only for a video's faces.
COLUMNS = ("file", "face", "box_left", "box_top", "box_width", "box_height", "confidence",
           *LANDMARK_COLUMNS, "age", "age_low", "age_high", "age_std", "age_range",
           "female_probability", "gender",
           "true_age", "true_gender", "error", "frame", "time_s", "track")
_LANDMARK_DECIMALS = 2


def check_output(path: str, inputs: Sequence[str]) -> None:
    """Refuses in one line (ValueError) an --output that is a folder, or that is one of the
    input files (itself, or through a link): writing it would replace that input."""
    predict_config.output_format(path)
    if os.path.isdir(path):
        raise UsageError(f"--output={path} is a folder; pass a file path ending in .csv or "
                         ".jsonl")
    target = _identity(path)
    if target is None:
        return  # not there yet, so no input
    for image in inputs:
        if _identity(image) == target:
            raise UsageError(f"--output={path} is the input {image}, which writing it would "
                             "replace; pass a path that is not an input")


def _identity(path):
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def face_row(file: str, face: int, *, age=None, age_range=None, female_probability=None,
             true_age=None, true_gender=None, box=None, confidence=None, landmarks=None,
             error: Optional[str] = None, age_low=None, age_high=None, age_std=None) -> dict:
    """One row (a dict over COLUMNS; None where empty) of face number `face` of `file`."""
    row = dict.fromkeys(COLUMNS)
    row.update(file=file, face=face, error=error,
               true_age=None if true_age is None else int(true_age),
               true_gender=None if true_gender is None else labels.GENDER_NAMES[int(true_gender)])
    if box is not None:
        row.update(box_left=int(box.left), box_top=int(box.top), box_width=int(box.width),
                   box_height=int(box.height))
    if confidence is not None:
        row["confidence"] = float(confidence)
    if landmarks is not None:
        values = [round(float(value), _LANDMARK_DECIMALS) for point in landmarks
                  for value in point]
        row.update(zip(LANDMARK_COLUMNS, values))
    if age is not None:
        row["age"] = float(age)
    for column, value in (("age_low", age_low), ("age_high", age_high), ("age_std", age_std)):
        if value is not None:
            row[column] = float(value)
    if age_range is None and age is not None:
        # No range head: the range the age falls in, as the SavedModel's age_range_label.
        age_range = int(labels.age_range(max(float(age), 0.0)))
    if age_range is not None:
        row["age_range"] = prediction_text.age_range_name(age_range)
    if female_probability is not None:
        row["female_probability"] = float(female_probability)
        row["gender"] = prediction_text.gender_name(female_probability)
    return row


def to_text(rows: Iterable[dict], file_format: str) -> str:
    """The rows as the file's text: CSV with a header row, or one JSON object a line."""
    if file_format == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)  # None is written as an empty cell
    return buffer.getvalue()


def write_rows(path: str, rows: Iterable[dict]) -> None:
    """Writes the rows to path atomically in its extension's format; ValueError in one line
    when the file cannot be written (a missing permission, a full disk)."""
    text = to_text(rows, predict_config.output_format(path))
    try:
        files.write_text(path, text)
    except OSError as error:
        reason = ("the disk is full" if files.is_disk_full(error)
                  else error.strerror or str(error))
        raise UsageError(f"cannot write --output={path} ({reason})") from None


def prediction_rows(prediction) -> list:
    """The rows of one face crop (a crop_batches.Prediction): face 1, or 0 with the error."""
    labelled = dict(true_age=prediction.true_age, true_gender=prediction.true_gender)
    if prediction.error:
        return [face_row(prediction.path, 0, error=prediction.error, **labelled)]
    return [face_row(prediction.path, 1, age=prediction.age, age_range=prediction.age_range,
                     female_probability=prediction.female_probability, **labelled,
                     **_interval(prediction))]


def _interval(prediction) -> dict:
    """face_row's interval arguments of a crop's or a photo face's prediction."""
    return dict(age_low=prediction.age_low, age_high=prediction.age_high,
                age_std=prediction.age_std)


def photo_rows(photo) -> list:
    """The rows of one photo (a photo_pipeline.PhotoPrediction): one per face, with its box
    and landmarks in the photo's pixels, or one with face 0 (and the error) when none."""
    true_age, true_gender = crop_batches.true_labels(photo.path)
    labelled = dict(true_age=true_age, true_gender=true_gender)
    if photo.error or not photo.faces:
        return [face_row(photo.path, 0, error=photo.error, **labelled)]
    return [face_row(
        photo.path, number, age=face.age, age_range=face.age_range,
        female_probability=face.female_probability,
        box=photo_pipeline.photo_box(face.box, photo.scale), confidence=face.face.confidence,
        landmarks=face.face.landmarks * photo.scale, **labelled, **_interval(face))
        for number, face in enumerate(photo.faces, start=1)]


def frame_row(name: str, frame, number: int, face, track) -> dict:
    """The row of face `number` of a video's sampled frame (a video_frames.Frame), as a
    photo's face row (photo_rows) with the frame, its time and the face's track."""
    (row,) = photo_rows(photo_pipeline.PhotoPrediction(path=name, faces=[face]))
    row.update(face=number, frame=frame.index, time_s=frame.time_s, track=track.number)
    return row


def video_rows(video) -> list:
    """A video's closing rows (a video_pipeline.VideoPrediction): one with face 0 and the
    error where it could not be read, was truncated, or had no face in any frame; else none
    (its faces' rows are frame_row's)."""
    error = video.error or video.truncated
    if error or not video.tracks:
        return [face_row(video.name, 0, error=error)]
    return []
