"""Loading a model to predict with: an export's SavedModel signature or a TFLite model,
checked to be an agetf export before anything is predicted.

A model that is not an agetf export is refused in one line that says what it is (its
signatures, inputs and outputs) and how to export one.
"""

import tensorflow as tf

from agetf import UsageError
from agetf.common.head_names import DEFAULT_INTERVAL
from agetf.modeling import age_intervals
from agetf.serving import signatures

EXPORT_COMMAND = "python -m agetf.train --load --model_dir=RUN --export_dir=DIR"
# How much of a foreign SavedModel an error describes (it stays one readable line).
_SIGNATURES_DESCRIBED, _NAMES_DESCRIBED = 4, 3


class SavedModelError(UsageError):
    """The --saved_model directory is not a usable agetf export."""


def load_predictor(model_path: str):
    """A callable taking `images_bytes` (encoded images) -> named outputs: the SavedModel's
    serving_default signature, or a TFLiteModel for a .tflite file (which takes the same
    inputs).

    Raises:
      SavedModelError (or TFLiteModelError): in one line, for anything but an agetf export.
    """
    if model_path.endswith(".tflite"):
        return load_tflite(model_path)
    return load_signature(model_path, signatures.BYTES_SIGNATURE)


def load_image_predictor(model_path: str):
    """A callable taking `images` (uint8, any size) -> named outputs: SavedModel or TFLite."""
    if model_path.endswith(".tflite"):
        return load_tflite(model_path)
    return load_signature(model_path, signatures.IMAGES_SIGNATURE)


def with_interval(predictor, interval: float = DEFAULT_INTERVAL):
    """The predictor (load_predictor's or load_image_predictor's) with its age_low and
    age_high read from its age_quantiles output at the central `interval`
    (age_intervals.interval_from_quantiles); a model without age_quantiles (regression
    only, TFLite) gives its outputs unchanged."""
    def predict(**inputs):
        outputs = dict(predictor(**inputs))
        if "age_quantiles" in outputs:
            low, high = age_intervals.interval_from_quantiles(
                outputs["age_quantiles"], interval)
            outputs["age_low"] = tf.constant(low, tf.float32)
            outputs["age_high"] = tf.constant(high, tf.float32)
        return outputs

    return predict


def load_signature(saved_model_dir: str, name: str):
    """The SavedModel's signature `name` (BYTES_SIGNATURE or IMAGES_SIGNATURE), checked to
    take the export's input and give age or female_probability; SavedModelError otherwise."""
    # Keras (which export imports) only once a model is loaded, not for a flag error.
    from agetf.serving import export

    # A TF Serving model base (MODEL/1/, MODEL/2/...) serves its highest version; so do we.
    saved_model_dir = export.resolve_saved_model_dir(saved_model_dir)
    if not tf.saved_model.contains_saved_model(saved_model_dir):
        raise SavedModelError(f"{saved_model_dir} is not a SavedModel; pass the saved_model "
                              "folder of a training run (model_dir/saved_model)")
    try:
        found = tf.saved_model.load(saved_model_dir).signatures
    except Exception as error:  # damaged or from an incompatible TensorFlow: many types
        lines = str(error).strip().splitlines()
        reason = lines[0][:200] if lines else type(error).__name__
        raise SavedModelError(f"{saved_model_dir} cannot be loaded ({reason}); export it again "
                              f"with {EXPORT_COMMAND}") from None
    if not _is_export_signature(found.get(name), name):
        input_name, dtype, shape = signatures.INPUTS[name]
        has = ", ".join(_describe_signature(key, found[key])
                        for key in sorted(found)[:_SIGNATURES_DESCRIBED])
        if len(found) > _SIGNATURES_DESCRIBED:
            has += f", and {len(found) - _SIGNATURES_DESCRIBED} more"
        raise SavedModelError(
            f"{saved_model_dir} is not an agetf export: it has signatures [{has}] without "
            f"'{name}' taking {input_name} ({dtype} {shape}) and giving "
            f"{' or '.join(signatures.PREDICTED_OUTPUTS)}; export one with {EXPORT_COMMAND}")
    return found[name]


def _is_export_signature(function, name):
    if function is None:
        return False
    input_name, dtype, shape = signatures.INPUTS[name]
    inputs = function.structured_input_signature[1]
    spec = inputs.get(input_name)
    return (set(inputs) == {input_name} and isinstance(spec, tf.TensorSpec)
            and spec.dtype.name == dtype and spec.shape.rank == len(shape)
            and isinstance(function.structured_outputs, dict)
            and bool(set(function.structured_outputs) & set(signatures.PREDICTED_OUTPUTS)))


def _describe_signature(name, function):
    """`name taking x (float32 [None, 4]) giving y`: what a foreign signature is."""
    def described(key, spec):
        if isinstance(spec, tf.TensorSpec):
            shape = spec.shape.as_list() if spec.shape.rank is not None else "[?]"
            return f"{key} ({spec.dtype.name} {shape})"
        return str(key)

    inputs = sorted(function.structured_input_signature[1].items())
    taking = ", ".join(described(key, spec) for key, spec in inputs[:_NAMES_DESCRIBED])
    outputs = function.structured_outputs
    outputs = sorted(outputs) if isinstance(outputs, dict) else [type(outputs).__name__]
    giving = ", ".join(map(str, outputs[:_NAMES_DESCRIBED]))
    more_in = ", ..." if len(inputs) > _NAMES_DESCRIBED else ""
    more_out = ", ..." if len(outputs) > _NAMES_DESCRIBED else ""
    return f"{name} taking {taking or 'nothing'}{more_in} giving {giving or 'nothing'}{more_out}"


def load_tflite(path: str):
    """A TFLiteModel of an agetf TFLite export; TFLiteModelError in one line otherwise."""
    # The TFLite runtime (and Keras, through tflite_export) only for a .tflite model.
    from agetf.serving import tflite_export

    model = tflite_export.TFLiteModel(path)  # checks the input itself
    outputs = sorted(model.runner.get_output_details())
    if not set(outputs) & set(signatures.PREDICTED_OUTPUTS):
        raise tflite_export.TFLiteModelError(
            f"{path} is not an agetf TFLite model: it gives {', '.join(outputs) or 'nothing'}, "
            f"not {' or '.join(signatures.PREDICTED_OUTPUTS)}; export one with python -m "
            "agetf.train --load --export_tflite")
    return model
