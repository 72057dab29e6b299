"""The full-integer TFLite model: uint8 image in, uint8 outputs, int8 arithmetic throughout,
so that integer-only accelerators (phones' NPUs, the Edge TPU) can run all of it.

Activations are calibrated on validation faces (`calibration_faces`): the converter runs the
float model on them and records each tensor's range. The model's input is the raw pixels,
uint8 with scale 1 and zero point 0 (the model normalises inside, in its `preprocess`
layer): a fake-quantization op pins the input's range to 0..255 whatever the faces hold.
uint8 rather than int8 at the edges: the same input as the other variants (raw pixels, no
shift by 128), and probabilities in 0..1 keep all 256 levels.
"""

import numpy as np
import tensorflow as tf

from agetf import UsageError
from agetf.data import input_pipeline
from agetf.modeling import model as model_lib
from agetf.serving import export

VARIANT = "int8_full"
# Calibration faces: the ranges stop moving after a few hundred (measured in
# docs/deployment.md); each costs one float pass in the converter.
DEFAULT_CALIBRATION_FACES = 300
_CALIBRATION_SPLIT = "validation"
_PIXEL_LEVELS = 255.0


def calibration_faces(input_config, count: int = DEFAULT_CALIBRATION_FACES) -> np.ndarray:
    """The first `count` faces of the validation split as the model sees them: uint8 pixels
    (float32 [n, img_dim, img_dim, 3], whole numbers in 0..255).

    Raises:
      UsageError: the split holds no faces, or count is below 1.
    """
    if count < 1:
        raise UsageError(f"calibration needs at least 1 face, got {count}")
    batches, total = [], 0
    dataset = input_pipeline.build_dataset(input_config, _CALIBRATION_SPLIT, 64, training=False)
    for images, _ in dataset:
        batches.append(np.round(images.numpy()))  # what agetf.predict feeds: uint8 pixels
        total += len(batches[-1])
        if total >= count:
            break
    if not total:
        raise UsageError(f"{input_config.data_dir} has no {_CALIBRATION_SPLIT} faces to "
                         "calibrate the full-integer TFLite model; convert a validation split")
    return np.concatenate(batches)[:count].astype(np.float32)


def _serving_module(model, img_dim: int, input_name: str, flip_average: bool) -> tf.Module:
    """As tflite_export.serving_module, but with float32 pixels in: the converter quantizes a
    float input (to uint8 here) and has no integer kernel for a uint8 -> float cast."""
    module = tf.Module(name="agetf_tflite_int8")
    module.model_variables = [variable.value for variable in model.variables]

    def serve(images):
        pixels = tf.quantization.fake_quant_with_min_max_args(images, 0.0, _PIXEL_LEVELS)
        return export.serving_outputs(model_lib.predict_outputs(
            model, pixels, flip_average=flip_average))

    module.serve = tf.function(serve, input_signature=[
        tf.TensorSpec([1, img_dim, img_dim, 3], tf.float32, name=input_name)])
    return module


def convert(model, img_dim: int, faces: np.ndarray, *, input_name: str,
            flip_average: bool = False) -> bytes:
    """The model as a full-integer TFLite flatbuffer, activations calibrated on `faces`
    (float32 [n, img_dim, img_dim, 3] in 0..255, see calibration_faces).

    Raises:
      UsageError: faces is empty or not at img_dim.
    """
    if faces is None or len(faces) == 0 or tuple(faces.shape[1:]) != (img_dim, img_dim, 3):
        raise UsageError(f"the full-integer TFLite model needs calibration faces "
                         f"[n, {img_dim}, {img_dim}, 3]; pass validation faces")
    module = _serving_module(model_lib.float32_copy(model), img_dim, input_name, flip_average)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([face[np.newaxis]] for face in faces)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return converter.convert()


def non_integer_tensors(interpreter) -> list:
    """What in the interpreter's model is not an integer tensor, one "where: dtype" string each
    (empty for an integer-only model): its inputs, its outputs, and every op's operands and
    results (weights and int32 biases included)."""
    found = [f"{kind} {d['name']}: {np.dtype(d['dtype']).name}"
             for kind, details in (("input", interpreter.get_input_details()),
                                   ("output", interpreter.get_output_details()))
             for d in details if not np.issubdtype(d["dtype"], np.integer)]
    # _get_ops_details is the interpreter's one listing of op tensors (marked experimental).
    for op in interpreter._get_ops_details():  # noqa: SLF001
        found += [f"op {op['index']} {op['op_name']}: {np.dtype(dtype).name}"
                  for dtype in (*op["operand_types"], *op["result_types"])
                  if not np.issubdtype(dtype, np.integer)]
    return found
