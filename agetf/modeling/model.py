"""The Keras model: an ImageNet backbone, global average pooling, and the requested heads.

The model takes float32 RGB images in 0..255; the backbone's own preprocessing is a
layer inside it, so saved and exported models take plain images. Its outputs are a
dict keyed by head name.
"""

import os
import socket
from typing import Sequence

import keras
from absl import logging

from agetf import UsageError
from agetf.common.head_names import in_canonical_order
from agetf.data import labels
from agetf.modeling import weights_file as weights_file_lib
from agetf.modeling.model_config import MIN_IMG_DIM, ModelConfig, check_backbone

MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# MobileNetV2 ImageNet weights exist for these square input sizes only; for any other
# size Keras loads the 224 weights (the convolutions fit any size).
MOBILENET_V2_WEIGHT_SIZES = (96, 128, 160, 192, 224)
# Caffe-style ImageNet channel means, in BGR order (keras.applications.resnet50).
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# keras.applications.resnet's published hash of the no-top file (MobileNetV2 has none).
_FILE_HASHES = {"resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5":
                "4d473c1dd8becc155b73f8504c6f6626"}
_WEIGHTS_HOST = ("storage.googleapis.com", 443)
_CONNECT_TIMEOUT_S = 3.0
_DOWNLOAD_SOCKET_TIMEOUT_S = 60.0


class WeightsUnavailableError(UsageError):
    """ImageNet weights are neither in the Keras cache nor downloadable."""


@keras.saving.register_keras_serializable(package="agetf")
class CaffePreprocessing(keras.layers.Layer):
    """RGB 0..255 -> BGR minus the ImageNet means (keras.applications.resnet50.preprocess_input)."""

    def call(self, images):
        bgr = keras.ops.flip(images, axis=-1)
        return bgr - keras.ops.convert_to_tensor(_CAFFE_BGR_MEAN, dtype=bgr.dtype)


@keras.saving.register_keras_serializable(package="agetf")
class Squeeze(keras.layers.Layer):
    """Drops the last axis of a [B, 1] head output, giving [B]."""

    def call(self, x):
        return keras.ops.squeeze(x, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])


def min_img_dim(backbone: str) -> int:
    """Smallest square input size the backbone accepts."""
    check_backbone(backbone, MIN_IMG_DIM.get(backbone, 0))
    return MIN_IMG_DIM[backbone]


def build_model(*, backbone: str, img_dim: int, heads: Sequence[str], alpha: float = 1.0,
                weights: str = "none", dropout: float = 0.2) -> keras.Model:
    """Builds backbone + pooling + dropout + the requested heads; outputs a dict by head name."""
    heads = [heads] if isinstance(heads, str) else list(heads)
    # The one set of checks of these settings: ModelConfig's (a UsageError naming the flag).
    ModelConfig(backbone=backbone, img_dim=img_dim, heads=tuple(heads), alpha=alpha,
                weights=weights, dropout=dropout)
    heads = list(in_canonical_order(heads))
    _check_alpha(backbone, alpha)
    weights_file = _resolve_weights(backbone, img_dim, alpha, weights)

    image = keras.Input((img_dim, img_dim, 3), name="image")
    x = _preprocessing_layer(backbone)(image)
    x = _backbone(backbone, img_dim, alpha, weights_file)(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = {head: _head(head, x) for head in heads}
    return keras.Model(image, outputs, name=f"agetf_{backbone.lower()}")


def predict_outputs(model, images, *, flip_average: bool = False) -> dict:
    """The model's outputs for images [n, h, w, 3] (inference mode); with flip_average, each
    output is the mean of the outputs for the images and their mirror images (test-time flip).

    Every output is a probability vector or a linear age, so the mean is again one, and the
    age read from a mean histogram is the mean of the two ages (the expectation is linear).
    """
    outputs = model(images, training=False)
    if not flip_average:
        return outputs
    mirrored = model(keras.ops.flip(images, axis=2), training=False)
    return {name: (outputs[name] + mirrored[name]) / 2 for name in outputs}


def float32_copy(model: keras.Model) -> keras.Model:
    """The model computing in float32: itself if it does, else a rebuilt copy with its weights.

    A model trained under mixed_float16 or mixed_bfloat16 keeps that policy when saved;
    TFLite has no builtin kernels for its float16 casts and multiplies, so on-device
    export freezes a float32 copy (the weights are float32 variables either way).
    """
    if all(layer.compute_dtype == "float32" for layer in _all_layers(model)):
        return model
    config = _with_float32_policies(model.get_config())
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _with_float32_policies(config):
    """The config with every mixed-precision dtype policy replaced by float32."""
    if isinstance(config, dict):
        if (config.get("class_name") == "DTypePolicy"
                and config["config"]["name"].startswith("mixed_")):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: _with_float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_with_float32_policies(value) for value in config]
    return config


def backbone_layers(model) -> list:
    """The backbone's own layers, in order (its input layer excluded)."""
    backbone = model.get_layer("backbone")
    return [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]


def set_trainable(model, *, unfreeze_from, train_batchnorm=False) -> None:
    """Freezes the backbone (None), unfreezes all of it (""), or from the first layer named prefix*.

    BatchNormalization layers stay frozen, so they run in inference mode, unless
    train_batchnorm: then those at or after the unfreeze point train too.
    """
    backbone = model.get_layer("backbone")
    layers = backbone_layers(model)
    if unfreeze_from is None:
        backbone.trainable = False
        return
    start = _first_layer_index(layers, unfreeze_from)
    backbone.trainable = True
    for index, layer in enumerate(layers):
        frozen = index < start or (isinstance(layer, keras.layers.BatchNormalization)
                                   and not train_batchnorm)
        layer.trainable = not frozen


def unfreeze_all(model) -> None:
    """Makes every layer trainable, BatchNormalization included (training without stages)."""
    # Keras 3 on TF ignores `layer.trainable = v` when the layer's own flag is already v,
    # leaving frozen sublayers frozen; going through False forces the propagation.
    model.trainable = False
    model.trainable = True


def _first_layer_index(layers, prefix):
    for index, layer in enumerate(layers):
        if layer.name.startswith(prefix):
            return index
    raise UsageError(f"no backbone layer name starts with {prefix!r}; pass the start of one of "
                     f"its layer names ({layers[0].name} ... {layers[-1].name}), "
                     "or '' to unfreeze the whole backbone")


def _check_alpha(backbone, alpha):
    if backbone == "MobileNetV2" and alpha not in MOBILENET_V2_ALPHAS:
        raise UsageError(f"alpha {alpha} is not a MobileNetV2 width; pass one of "
                         f"{', '.join(map(str, MOBILENET_V2_ALPHAS))}")
    if backbone != "MobileNetV2" and alpha != 1.0:
        raise UsageError(f"alpha {alpha} applies to MobileNetV2 only; "
                         f"pass --alpha=1.0 with {backbone}")


def _preprocessing_layer(backbone):
    if backbone == "MobileNetV2":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    return CaffePreprocessing(name="preprocess")


def _backbone(backbone, img_dim, alpha, weights_file):
    shape = (img_dim, img_dim, 3)
    # Built without weights and then loaded, as keras.applications' weights=path does, so that a
    # file for another backbone or width is one line rather than Keras' traceback.
    if backbone == "MobileNetV2":
        model = keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False,
                                               weights=None, name="backbone")
    else:
        model = keras.applications.ResNet50(input_shape=shape, include_top=False, weights=None,
                                            name="backbone")
    if weights_file is not None:
        weights_file_lib.load_backbone_weights(model, weights_file, (backbone, alpha))
    return model


def _head(head, features):
    if head == "age_histogram":
        return keras.layers.Dense(labels.NUM_AGE_BINS, activation="softmax", dtype="float32",
                                  name=head)(features)
    if head == "age_range":
        return keras.layers.Dense(labels.NUM_AGE_RANGES, activation="softmax", dtype="float32",
                                  name=head)(features)
    activation = "sigmoid" if head == "gender" else None
    unit = keras.layers.Dense(1, activation=activation, dtype="float32", name=head)(features)
    return Squeeze(dtype="float32", name=f"{head}_squeeze")(unit)


def _resolve_weights(backbone, img_dim, alpha, weights):
    """Maps the weights setting to None or a weights file path, without hanging offline."""
    if weights is None or weights.lower() == "none":
        return None
    if weights.lower() != "imagenet":
        return weights  # a file ModelConfig found readable; _backbone checks that it fits
    file_name = imagenet_weights_file_name(backbone, img_dim, alpha)
    cached = os.path.join(keras_cache_dir(), file_name)
    if os.path.isfile(cached):
        return cached
    return _download_weights(file_name, cached)


def imagenet_weights_file_name(backbone, img_dim, alpha=1.0):
    """The no-top ImageNet weights file keras.applications loads for this configuration."""
    if backbone == "ResNet50":
        return "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    rows = img_dim
    if img_dim not in MOBILENET_V2_WEIGHT_SIZES:
        rows = 224
        logging.warning("MobileNetV2 ImageNet weights exist for img_dim in %s only; loading the "
                        "224 weights for img_dim %d", MOBILENET_V2_WEIGHT_SIZES, img_dim)
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"


def keras_cache_dir():
    """Where keras.utils.get_file keeps downloaded models (its rule, /tmp fallback included)."""
    home = os.path.expanduser("~")
    if not os.access(home, os.W_OK):
        home = "/tmp"
    base = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join(home, ".keras"))
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return os.path.join(base, "models")


def _download_weights(file_name, cached):
    if not _can_reach_weights_host():
        raise WeightsUnavailableError(
            f"ImageNet weights {cached} are not cached and {_WEIGHTS_HOST[0]} is unreachable; "
            "copy the file there, or pass --weights=none or --weights=/path/to/file.h5")
    origin = _weights_origin(file_name)
    previous = socket.getdefaulttimeout()
    # A stalled download then fails instead of hanging.
    socket.setdefaulttimeout(_DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        return keras.utils.get_file(file_name, origin, cache_subdir="models",
                                    file_hash=_FILE_HASHES.get(file_name))
    except Exception as error:  # get_file raises a bare Exception on fetch failures
        raise WeightsUnavailableError(
            f"could not download ImageNet weights {file_name} from {origin} ({error}); "
            f"copy the file to {cached}, or pass --weights=none or --weights=/path/to/file.h5"
        ) from error
    finally:
        socket.setdefaulttimeout(previous)


def _weights_origin(file_name):
    if file_name.startswith("resnet50"):
        return "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + file_name
    return ("https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
            + file_name)


def _can_reach_weights_host():
    try:
        with socket.create_connection(_WEIGHTS_HOST, timeout=_CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False
