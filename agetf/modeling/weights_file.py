"""Loading a backbone weights file (--weights=PATH), and saying in one line why one does not fit.

Keras reports a file for another backbone or width with a traceback, after a warning per
layer; `load_backbone_weights` reads the file with h5py instead to name what it holds, what
was asked, and the first layer where the two differ. Whether the path is a readable weights
file at all is checked earlier, without TensorFlow, by `agetf.modeling.model_config.ModelConfig`.
"""

import re
import warnings

import h5py

from agetf import UsageError

# A MobileNetV2 file's width, from Conv_1's input channels: 320 * alpha, rounded as Keras does.
_MOBILENET_V2_ALPHA_BY_CHANNELS = {112: 0.35, 160: 0.5, 240: 0.75, 320: 1.0, 416: 1.3, 448: 1.4}


def load_backbone_weights(model, path, wanted):
    """model.load_weights(path); a file for another backbone or width is a one-line UsageError."""
    # Keras warns about each layer it could not load, then raises: the one line replaces both.
    with warnings.catch_warnings(record=True) as caught:
        try:
            model.load_weights(path)
        except ValueError as error:
            raise UsageError(_misfit_message(model, path, wanted, error)) from None
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


def _misfit_message(model, path, wanted, error):
    """What the file holds, what was asked, and the first layer where they differ."""
    try:
        holds, difference = _read_misfit(model, path)
    except Exception:  # noqa: BLE001 - the details are a courtesy; Keras' first line stands in
        holds, difference = None, None
    difference = difference or next((line for line in str(error).splitlines() if line.strip()),
                                    type(error).__name__)
    if holds and holds != wanted:
        return (f"weights file {path} holds {_backbone_name(*holds)} weights, not "
                f"{_backbone_name(*wanted)}: {difference}; pass --base_model={holds[0]} "
                f"--alpha={holds[1]}, or a weights file for {_backbone_name(*wanted)}")
    return (f"weights file {path} does not fit {_backbone_name(*wanted)}: {difference}; "
            "pass the --base_model and --alpha the file was saved for")


def _backbone_name(backbone, alpha):
    return f"MobileNetV2 alpha={alpha}" if backbone == "MobileNetV2" else backbone


def _read_misfit(model, path):
    """(backbone, alpha) the file holds or None, and where it first differs from the model."""
    with h5py.File(path, "r") as file:
        if "model_weights" in file and "layer_names" not in file.attrs:
            file = file["model_weights"]  # a whole legacy model file, as Keras reads it
        if "layer_names" in file.attrs:
            return _legacy_backbone(file), _first_difference(model, _legacy_saved_layers(file))
        return (_keras_3_backbone(file.get("layers", {})),
                _first_difference(model, _keras_3_saved_layers(file, model)))


def _legacy_saved_layers(file):
    """(label, shapes) of each layer with weights, in the file's order (Keras loads by order)."""
    saved = []
    for name in _names(file.attrs["layer_names"]):
        shapes = [tuple(file[name][weight].shape)
                  for weight in _names(file[name].attrs.get("weight_names", []))]
        if shapes:
            saved.append((f"layer {name}", shapes))
    return saved


def _keras_3_saved_layers(file, model):
    """(label, shapes) for each of the model's layers with weights, at the group save_weights
    gives it: layers/<snake_case class name>[_<n>], numbered in the model's layer order."""
    saved, counts = [], {}
    for layer in model.layers:
        kind = _snake_case(type(layer).__name__)
        counts[kind] = counts.get(kind, -1) + 1
        group = f"layers/{kind}" + (f"_{counts[kind]}" if counts[kind] else "")
        if layer.weights:
            arrays = file.get(f"{group}/vars", {})
            saved.append((group, [tuple(arrays[str(i)].shape) for i in range(len(arrays))]))
    return saved


def _snake_case(name):
    """keras.src.utils.naming.to_snake_case: Conv2D -> conv2d, ReLU -> re_lu."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _first_difference(model, saved):
    """Where the file's arrays first differ from the model's, in words; None if they fit."""
    layers = [layer for layer in model.layers if layer.weights]
    for layer, (label, shapes) in zip(layers, saved):
        where = f"its {label}" + ("" if label == f"layer {layer.name}"
                                  else f" (this backbone's {layer.name})")
        ours = [tuple(weight.shape) for weight in layer.weights]
        if len(shapes) != len(ours):
            return (f"{where} holds {len(shapes)} array{'' if len(shapes) == 1 else 's'} where "
                    f"this backbone has {len(ours)}")
        for weight, theirs, mine in zip(layer.weights, shapes, ours):
            if theirs != mine:
                return (f"{where} holds a {weight.name} of shape {theirs} where this backbone "
                        f"has {mine}")
    if len(saved) != len(layers):
        return f"it holds weights for {len(saved)} layers where this backbone has {len(layers)}"
    return None


def _legacy_backbone(file):
    names = _names(file.attrs["layer_names"])
    if "Conv_1" in names:
        kernel = _names(file["Conv_1"].attrs["weight_names"])[0]
        return _mobilenet_v2(file["Conv_1"][kernel].shape)
    return ("ResNet50", 1.0) if "conv5_block3_3_conv" in names else None


def _keras_3_backbone(layers):
    convs = sum(1 for name in layers if re.fullmatch(r"conv2d(_\d+)?", name))
    if "depthwise_conv2d" in layers and f"conv2d_{convs - 1}/vars/0" in layers:
        return _mobilenet_v2(layers[f"conv2d_{convs - 1}/vars/0"].shape)  # the last: Conv_1
    if "conv2d/vars/0" in layers and layers["conv2d/vars/0"].shape == (7, 7, 3, 64):
        return "ResNet50", 1.0
    return None


def _mobilenet_v2(conv_1_kernel_shape):
    alpha = _MOBILENET_V2_ALPHA_BY_CHANNELS.get(conv_1_kernel_shape[2])
    return ("MobileNetV2", alpha) if alpha else None


def _names(values):
    return [value.decode("utf8") if isinstance(value, bytes) else str(value) for value in values]
