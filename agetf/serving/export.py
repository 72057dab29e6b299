"""Serving export: a SavedModel that takes encoded images or uint8 images and returns ages
in years, and the name of the predicted age range.

`serving_default` decodes a JPEG with `image_ops.decode_jpeg_at_least`, as the trainer
evaluates, so the export predicts exactly what the model predicted in training; PNG (and
BMP, GIF) bytes take TensorFlow's general decoder. The range names ("0-5", ..., "80+")
travel with the model as the `age_range_label` output and the asset `age_ranges.txt`.

With an age histogram or range head, every signature also returns how sure the age is
(agetf.modeling.age_intervals): `age_low` and `age_high` (the central interval at the
calibrated share, 0.8), `age_std` and `age_quantiles` (the 0.5%, 1%, ..., 99.5% quantiles,
from which agetf.predict --interval reads any other central interval), all after the
run's calibration (temperatures by predicted age; agetf.evaluation.interval_calibration),
constants of the graph; the age itself and the raw histogram or ranges stay as the model gives them.

TensorFlow Serving loads MODEL_BASE/<version>/: a run's saved_model/ folder is one version
(docs/deployment.md); `resolve_saved_model_dir` finds the highest version of a model base.
"""

import os
import re
import shutil
import tempfile

import tensorflow as tf

from agetf.common.head_names import DEFAULT_INTERVAL
from agetf.data import image_ops, labels
from agetf.modeling import age_intervals, heads
from agetf.modeling import model as model_lib
from agetf.serving.signatures import (
    AGE_RANGE_LABEL,
    BYTES_INPUT,
    BYTES_SIGNATURE,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
)

# One range name per line, line k naming class k of the age_range output.
AGE_RANGES_ASSET = "age_ranges.txt"
# Serving output name of each head's probabilities; `age` (years) comes from any age head.
_SERVING_NAMES = {"age_histogram": "age_histogram", "age_range": "age_range",
                  "gender": "female_probability"}
# What tf.saved_model.contains_saved_model looks for.
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def serving_outputs(outputs: dict) -> dict:
    """Maps model outputs to the export's named float32 outputs: `age` in years wherever an
    age head was trained (a gender-only model gives female_probability alone)."""
    years = heads.predicted_age_years(outputs)
    named = {} if years is None else {"age": years}
    for head, name in _SERVING_NAMES.items():
        if head in outputs:
            named[name] = outputs[head]
    return {name: tf.cast(value, tf.float32) for name, value in named.items()}


def age_range_labels(outputs: dict, years):
    """Names of the predicted age ranges: the age_range head's most probable class where the
    model has that head (as agetf.predict prints), else the range the age in years falls in."""
    if "age_range" in outputs:
        classes = tf.argmax(outputs["age_range"], axis=-1, output_type=tf.int32)
    else:
        # 80 and above are 80+ (a regression age can reach names.MAX_AGE).
        classes = tf.clip_by_value(
            tf.cast(tf.floor(years / labels.AGE_RANGE_WIDTH), tf.int32), 0,
            labels.NUM_AGE_RANGES - 1)
    return tf.gather(tf.constant(labels.AGE_RANGE_NAMES), classes)


def decode_image(encoded, img_dim: int):
    """JPEG, PNG, BMP or GIF (first frame) bytes -> uint8 RGB [h, w, 3]; a JPEG is decoded
    as the trainer evaluates, at the smallest DCT scale whose short side is >= img_dim."""
    # One decode for every format, yet a JPEG keeps its fast path and its exact pixels
    # (decode_image would decode it whole, with another DCT method: up to 13 grey levels
    # apart, and 1.8x slower on a 1024x768 photo).
    image = tf.cond(tf.io.is_jpeg(encoded),
                    lambda: image_ops.decode_jpeg_at_least(encoded, img_dim),
                    lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    return image


def decode_and_resize(encoded, img_dim: int):
    """Serving preprocessing: encoded image bytes -> float32 [img_dim, img_dim, 3], 0..255."""
    return image_ops.resize(decode_image(encoded, img_dim), img_dim)


def resolve_saved_model_dir(path: str) -> str:
    """path if it holds a SavedModel, else its highest integer-named subfolder holding one
    (the version TensorFlow Serving serves from a model base), else path unchanged."""
    if _holds_saved_model(path):
        return path
    versions = []
    if os.path.isdir(path):
        for entry in os.listdir(path):
            version = _version_number(entry)
            if version is not None and _holds_saved_model(os.path.join(path, entry)):
                versions.append((version, entry))
    return os.path.join(path, max(versions)[1]) if versions else path


def _version_number(name):
    """The version number of a folder named by digits (as TF Serving reads 0011 as 11), or None."""
    return int(name) if re.fullmatch(r"[0-9]+", name) else None


def _holds_saved_model(path):
    return any(os.path.isfile(os.path.join(path, name)) for name in _SAVED_MODEL_FILES)


class _ServingModule(tf.Module):
    """Holds the model (and so its variables) and the two serving functions; the export
    adds the range names as an asset (`age_range_names`) where an age is predicted."""

    def __init__(self, model, img_dim, flip_average=False,
                 interval_knots=age_intervals.NO_CALIBRATION, interval=DEFAULT_INTERVAL):
        super().__init__(name="agetf_serving")
        self.model = model
        self.img_dim = img_dim
        self.flip_average = flip_average
        self.interval_knots = tuple((float(age), float(t)) for age, t in interval_knots)
        self.interval = float(interval)
        self.serve_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
        self.serve_images = tf.function(
            self._serve_images,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=IMAGES_INPUT)])

    def _serve_bytes(self, images_bytes):
        images = tf.map_fn(
            lambda encoded: decode_and_resize(encoded, self.img_dim), images_bytes,
            fn_output_signature=tf.TensorSpec([self.img_dim, self.img_dim, 3], tf.float32))
        return self._predict(images)

    def _serve_images(self, images):
        return self._predict(image_ops.resize(images, self.img_dim))

    def _predict(self, images):
        outputs = model_lib.predict_outputs(self.model, images, flip_average=self.flip_average)
        named = serving_outputs(outputs)
        if "age" in named:
            named[AGE_RANGE_LABEL] = age_range_labels(outputs, named["age"])
        head = age_intervals.distribution_head(outputs)
        if head is not None:
            named.update(age_intervals.interval_outputs(
                tf.cast(outputs[head], tf.float32), self.interval_knots, self.interval))
        return named


def export_saved_model(model, export_dir: str, *, img_dim: int, flip_average: bool = False,
                       interval_knots=age_intervals.NO_CALIBRATION,
                       interval: float = DEFAULT_INTERVAL) -> None:
    """Writes the serving SavedModel to export_dir, replacing an old one only once complete;
    with flip_average its signatures average each image's and its mirror image's outputs.
    interval_knots, (predicted age, temperature) pairs, calibrate the age interval outputs
    (NO_CALIBRATION: as the model gives them), whose age_low and age_high hold `interval`
    of each face's distribution."""
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    _remove_leftovers(export_dir)
    staging = tempfile.mkdtemp(dir=parent, prefix=os.path.basename(export_dir) + ".tmp-")
    # The asset's source lies outside staging: saving copies it into staging/assets/.
    names_dir = tempfile.mkdtemp(prefix="agetf-age-ranges-")
    try:
        module = _ServingModule(model, img_dim, flip_average, interval_knots, interval)
        signatures = {
            BYTES_SIGNATURE: module.serve_bytes.get_concrete_function(),
            IMAGES_SIGNATURE: module.serve_images.get_concrete_function(),
        }
        if AGE_RANGE_LABEL in signatures[BYTES_SIGNATURE].structured_outputs:
            names_file = os.path.join(names_dir, AGE_RANGES_ASSET)
            with open(names_file, "w") as f:
                f.write("\n".join(labels.AGE_RANGE_NAMES) + "\n")
            module.age_range_names = tf.saved_model.Asset(names_file)
        tf.saved_model.save(module, staging, signatures=signatures)
        _replace_dir(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(names_dir, ignore_errors=True)


def _remove_leftovers(export_dir):
    """Removes what an export killed before its rename left beside export_dir."""
    name = os.path.basename(export_dir)
    for entry in os.listdir(os.path.dirname(export_dir)):
        if entry.startswith((name + ".tmp-", name + ".old-")):
            shutil.rmtree(os.path.join(os.path.dirname(export_dir), entry), ignore_errors=True)


def _replace_dir(source, target):
    """Renames source to target; an existing target is moved aside first and removed after."""
    if not os.path.exists(target):
        os.rename(source, target)
        return
    old = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=os.path.basename(target) + ".old-")
    os.rmdir(old)
    os.rename(target, old)
    os.rename(source, target)
    shutil.rmtree(old, ignore_errors=True)
