"""Predicting face crops in batches: files read (optionally ahead, in threads), the model
called once per batch, and a file it cannot decode found and reported alone.

A crop goes to the model as its file's bytes where it is an RGB JPEG, so that the model
decodes it as in training; one with an EXIF orientation (a phone's) is turned upright
first, as agetf.data.image_files.read_photo turns photos.
"""

import collections
import concurrent.futures
import dataclasses
import io
import itertools
from typing import Iterable, Iterator, Optional

import tensorflow as tf
from PIL import Image, ImageOps

from agetf import UsageError
from agetf.data import names
from agetf.data.image_files import (
    ImageReadError,
    ReadLimits,
    decode,
    pillow_errors,
    read_jpeg,
    rgb_jpeg,
)
from agetf.modeling import outputs as model_outputs
from agetf.serving.predict_config import DEFAULT_BATCH_SIZE

# Threads that read the next batches' files while the model runs on the current one (each
# reads a whole batch, so this many batches are read ahead); none by default, as
# docs/performance.md measures: they pay off where files are slow to read (network storage).
READ_THREADS = 0
_EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 is upright
_TURNED = (5, 6, 7, 8)  # orientations that swap width and height
# What looks like a photo rather than a face crop (UTKFace's crops are 200 x 200): a side
# five crops long, or a shape as far from square as a 4:3 photo's.
_CROP_MAX_SIDE = 1000
_CROP_MAX_ASPECT = 1.3


@dataclasses.dataclass
class Prediction:
    """One image's prediction, its labels where the file name carries them, or an error;
    image_size is (width, height) as read."""

    path: str
    age: Optional[float] = None
    age_range: Optional[int] = None
    female_probability: Optional[float] = None
    true_age: Optional[int] = None
    true_gender: Optional[int] = None
    error: Optional[str] = None
    image_size: Optional[tuple] = None
    age_low: Optional[float] = None  # the central age interval and spread, where predicted
    age_high: Optional[float] = None
    age_std: Optional[float] = None


def true_labels(path: str):
    """(age, gender) from a UTKFace-style file name, or (None, None)."""
    try:
        face = names.parse_face_name(path)
    except names.UnparseableName:
        return None, None
    return face.age, face.gender


def not_like_a_crop(prediction: Prediction) -> Optional[str]:
    """Why an image looks like a photo rather than a face crop ('much larger than a face
    crop', 'far from square'), or None."""
    if prediction.image_size is None:
        return None
    width, height = prediction.image_size
    if max(width, height) > _CROP_MAX_SIDE:
        return "much larger than a face crop"
    if max(width, height) >= _CROP_MAX_ASPECT * min(width, height):
        return "far from square"
    return None


def predict_files(predictor, paths: Iterable[str], batch_size: int = DEFAULT_BATCH_SIZE,
                  read_threads: int = READ_THREADS,
                  limits: Optional[ReadLimits] = None) -> Iterator[Prediction]:
    """Predicts every path in order, batch_size images per call; unreadable files get an error.

    Args:
      predictor: serving_default, or anything that takes images_bytes, decodes them and
        raises tf.errors.InvalidArgumentError on bytes it cannot decode (an RGB JPEG is
        checked only so).
      paths: image files.
      batch_size: images per call of the predictor.
      read_threads: threads that read the next batches' files while the model runs on the
        current batch; 0 reads each batch just before its call. The batches, and so the
        predictions and their order, are the same either way.
      limits: a file over them (default ReadLimits()) gets an error without being read
        whole or decoded.

    Raises:
      UsageError: for a batch_size or read_threads out of range.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}; pass --batch_size=32")
    if read_threads < 0:
        raise UsageError(f"read_threads must be >= 0, got {read_threads}")
    paths, limits = iter(paths), limits or ReadLimits()
    batches = iter(lambda: list(itertools.islice(paths, batch_size)), [])
    if read_threads == 0:
        for batch in batches:
            yield from _call_batch(predictor, *_read_batch(batch, limits))
        return
    with concurrent.futures.ThreadPoolExecutor(read_threads,
                                               thread_name_prefix="agetf-read") as pool:
        reading = collections.deque()
        for batch in batches:
            reading.append(pool.submit(_read_batch, batch, limits))
            if len(reading) > read_threads:
                yield from _call_batch(predictor, *reading.popleft().result())
        while reading:
            yield from _call_batch(predictor, *reading.popleft().result())


def _read_batch(paths, limits):
    """(a Prediction per path with its labels or read error, the readable files' bytes).

    RGB JPEGs are not decoded here: the model's decode is the check (see _fill).
    """
    predictions, images = [], []
    for path in paths:
        true_age, true_gender = true_labels(path)
        prediction = Prediction(path=path, true_age=true_age, true_gender=true_gender)
        try:
            jpeg = read_jpeg(path, check=False, limits=limits)
            encoded, prediction.image_size = upright(path, jpeg, limits)
            images.append(encoded)
        except ImageReadError as error:
            prediction.error = str(error)
        predictions.append(prediction)
    return predictions, images


def upright(path: str, jpeg: bytes, limits: Optional[ReadLimits] = None):
    """(the image's bytes, its upright (width, height)): a JPEG with an EXIF orientation
    other than upright decoded (within limits.max_pixels, as read_photo decodes), turned
    upright and encoded as a PNG (losslessly); any other image as it is."""
    with pillow_errors(path):
        image = Image.open(io.BytesIO(jpeg))
        width, height = image.size
        orientation = _orientation(image)
        if orientation == 1:
            return jpeg, (width, height)
        decode(path, image, (limits or ReadLimits()).max_pixels)
        turned = ImageOps.exif_transpose(image)
        encoded = io.BytesIO()
        turned.save(encoded, format="PNG")
        return encoded.getvalue(), (height, width) if orientation in _TURNED else (width, height)


def _orientation(image):
    try:
        return image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block (many types): its pixels are read as before
        return 1


def _call_batch(predictor, predictions, images):
    """Runs the model once on the batch's readable images and fills in their predictions."""
    readable = [p for p in predictions if p.error is None]
    if readable:
        try:
            outputs = _run(predictor, images)
        except tf.errors.InvalidArgumentError:
            # A file TensorFlow's decoder rejects (truncated, corrupt): find it one by one.
            outputs = None
        for index, prediction in enumerate(readable):
            _fill(prediction, outputs, index, predictor, images[index])
    return predictions


def _run(predictor, images):
    outputs = predictor(images_bytes=tf.constant(images, dtype=tf.string))
    return {name: value.numpy() for name, value in outputs.items()}


def _fill(prediction, outputs, index, predictor, encoded):
    if outputs is None:
        try:
            outputs, index = _run(predictor, [encoded]), 0
        except tf.errors.InvalidArgumentError as error:
            try:  # Pillow's reason, as when every file was decoded before its batch
                rgb_jpeg(prediction.path, encoded)
            except ImageReadError as reason:
                prediction.error = str(reason)
                return
            prediction.error = f"cannot decode {prediction.path} ({error.message.splitlines()[0]})"
            return
    face = model_outputs.from_serving(outputs).face(index)
    prediction.age = face.age
    prediction.age_range = face.age_range
    prediction.female_probability = face.female_probability
    prediction.age_low, prediction.age_high = face.age_low, face.age_high
    prediction.age_std = face.age_std
