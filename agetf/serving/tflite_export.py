"""On-device export: TFLite models that take one uint8 image [1, img_dim, img_dim, 3].

TFLite has no antialiased resize (TF's ScaleAndTranslate op is not a builtin), so the
models take images already at img_dim and the caller resizes; `TFLiteModel` does that
with `image_ops.resize`, the function the SavedModel uses, then rounds to uint8.

Variants: `float32` (the same arithmetic as the SavedModel), `float16` (weights stored
as float16, half the size), `dynamic_int8` (weights stored as int8, activations
float, about a quarter of the size) and `int8_full` (integer arithmetic throughout, uint8
outputs, activations calibrated on validation faces: `tflite_int8`).

The models run on LiteRT's interpreter (`pip install ai-edge-litert`, the `litert` extra)
where it is installed, else on TensorFlow's deprecated tf.lite.Interpreter:
`load_interpreter` is the one place that chooses.
"""

import importlib.metadata
import os

import numpy as np
import tensorflow as tf

from agetf import UsageError
from agetf.common import files
from agetf.data import image_ops
from agetf.modeling import model as model_lib
from agetf.serving import export, tflite_int8

VARIANTS = ("float32", "float16", "dynamic_int8", "int8_full")  # int8_full: tflite_int8.VARIANT
INPUT_NAME = "images"


def tflite_file_name(variant: str) -> str:
    """File name of one variant, e.g. model_float32.tflite."""
    return f"model_{variant}.tflite"


def _input_spec(img_dim):
    return tf.TensorSpec([1, img_dim, img_dim, 3], tf.uint8, name=INPUT_NAME)


def serving_module(model, img_dim: int, flip_average: bool = False) -> tf.Module:
    """A module whose `serve` maps a uint8 image to named outputs, tracking the model's
    weights as tf.Variables so the converter folds them into constants.

    Tracked through the Keras model, or as keras.Variables, the converter kept them as
    TFLite resource variables that nothing initializes (every output NaN).
    """
    module = tf.Module(name="agetf_tflite")
    module.model_variables = [variable.value for variable in model.variables]
    module.serve = tf.function(
        lambda images: export.serving_outputs(model_lib.predict_outputs(
            model, tf.cast(images, tf.float32), flip_average=flip_average)),
        input_signature=[_input_spec(img_dim)])
    return module


def convert(model, img_dim: int, variant: str = "float32", flip_average: bool = False,
            calibration_faces=None) -> bytes:
    """The model as a TFLite flatbuffer of one variant (see VARIANTS); with flip_average it
    averages the outputs for the image and its mirror image, as the SavedModel does.
    `int8_full` needs calibration_faces (tflite_int8.calibration_faces); the others ignore it."""
    if variant not in VARIANTS:
        raise UsageError(f"unknown TFLite variant {variant!r}; use one of {', '.join(VARIANTS)}")
    if variant == tflite_int8.VARIANT:
        return tflite_int8.convert(model, img_dim, calibration_faces, input_name=INPUT_NAME,
                                   flip_average=flip_average)
    module = serving_module(model_lib.float32_copy(model), img_dim, flip_average)
    # Passing the module as the trackable object gives the model a signature with named outputs.
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module)
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # without a dataset: dynamic range
    return converter.convert()


def export_tflite(model, output_dir: str, *, img_dim: int, variants=VARIANTS,
                  flip_average: bool = False, calibration_faces=None) -> dict:
    """Writes model_{variant}.tflite for each variant into output_dir; returns {variant: path}.
    `int8_full` (one of the default variants) needs calibration_faces, see convert."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {}
    for variant in variants:
        flatbuffer = convert(model, img_dim, variant, flip_average, calibration_faces)
        path = os.path.join(output_dir, tflite_file_name(variant))
        files.write_bytes(path, flatbuffer)  # atomically: a reader never sees half a model
        paths[variant] = path
    return paths


class TFLiteModelError(UsageError):
    """A file that is not an agetf TFLite model."""


class InterpreterUnavailableError(UsageError, RuntimeError):
    """Neither LiteRT nor TensorFlow's TFLite interpreter can be imported."""


def interpreter_class():
    """LiteRT's Interpreter class where ai-edge-litert is installed, else tf.lite.Interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = getattr(tf.lite, "Interpreter", None)  # deprecated, to be deleted
    if Interpreter is None:
        raise InterpreterUnavailableError(
            "no TFLite interpreter: install LiteRT with pip install ai-edge-litert "
            "(or pip install -e '.[litert]' in the agetf checkout)")
    return Interpreter


def load_interpreter(model_path: str, num_threads: int | None = None):
    """An interpreter for the .tflite file model_path (see interpreter_class)."""
    return interpreter_class()(model_path=model_path, num_threads=num_threads)


def interpreter_name() -> str:
    """Which interpreter load_interpreter uses, with its version: for benchmarks' records."""
    if interpreter_class().__module__.startswith("ai_edge_litert"):
        return f"ai_edge_litert {importlib.metadata.version('ai-edge-litert')}"
    return f"tf.lite (TensorFlow {tf.__version__})"


class TFLiteModel:
    """Runs an exported TFLite model; callable like the SavedModel's signatures. Integer
    outputs (the int8_full variant's) come back dequantized to float32."""

    def __init__(self, path: str, num_threads: int | None = None):
        if not os.path.isfile(path):
            raise TFLiteModelError(f"{path} does not exist; pass a .tflite file written by "
                                   "agetf.train --export_tflite")
        try:
            self.interpreter = load_interpreter(path, num_threads=num_threads)
            self.runner = self.interpreter.get_signature_runner()
        except InterpreterUnavailableError:
            raise  # no runtime: the file is not to blame
        except (ValueError, RuntimeError) as error:
            raise TFLiteModelError(f"{path} is not a TFLite model ({error}); pass a .tflite "
                                   "file written by agetf.train --export_tflite") from None
        details = self.runner.get_input_details()
        if INPUT_NAME not in details or details[INPUT_NAME]["dtype"] != np.uint8:
            raise TFLiteModelError(f"{path} does not take uint8 {INPUT_NAME}; re-export it with "
                                   "agetf.train --load --export_tflite")
        if details[INPUT_NAME]["quantization"] not in ((0.0, 0), (1.0, 0)):
            raise TFLiteModelError(f"{path} does not take raw pixels (its input is quantized "
                                   f"as {details[INPUT_NAME]['quantization']}); re-export it "
                                   "with agetf.train --load --export_tflite")
        self.img_dim = int(details[INPUT_NAME]["shape"][1])
        # (scale, zero point) of each integer output; (0.0, 0) marks a float one.
        self.output_quantization = {name: detail["quantization"] for name, detail
                                    in self.runner.get_output_details().items()}

    def predict_resized(self, images: np.ndarray) -> dict:
        """Outputs for uint8 images already at [n, img_dim, img_dim, 3], one interpreter call
        each."""
        results = [self.runner(**{INPUT_NAME: image[np.newaxis]}) for image in images]
        return {name: self._dequantize(name, np.concatenate([r[name] for r in results]))
                for name in results[0]}

    def _dequantize(self, name, values):
        scale, zero_point = self.output_quantization[name]
        if not scale:
            return values
        return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def to_input(self, image) -> np.ndarray:
        """One image of any size (uint8 or float 0..255) as the model's uint8 input."""
        resized = image_ops.resize(image, self.img_dim).numpy()
        return np.round(resized).astype(np.uint8)

    def __call__(self, images_bytes=None, images=None) -> dict:
        """Like the SavedModel: encoded JPEG or PNG bytes (images_bytes) or uint8 images of any
        size."""
        if images_bytes is not None:
            inputs = [export.decode_and_resize(encoded, self.img_dim) for encoded in images_bytes]
        else:
            inputs = list(images)
        batch = np.stack([self.to_input(image) for image in inputs])
        return {name: tf.constant(value) for name, value in self.predict_resized(batch).items()}
