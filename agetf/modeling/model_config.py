"""The settings of the model: its backbone, input size, heads, and the backbone's weights.

A frozen dataclass that checks itself when made, with messages that name the flag and the fix;
a --weights file is checked to be one Keras can read. No TensorFlow: agetf.train checks its
flags with it before TensorFlow starts.
"""

import dataclasses
import os

from agetf import UsageError
from agetf.common import head_names
from agetf.common import setting_checks as check

BACKBONES = ("MobileNetV2", "ResNet50")
# keras.applications' obtain_input_shape(min_size=32) for both backbones.
MIN_IMG_DIM = {"MobileNetV2": 32, "ResNet50": 32}
# Fine-tuning starts here by default: MobileNetV2's last inverted-residual block and
# Conv_1, and ResNet50's last stage (the older project's `layers[152:]`, by name).
DEFAULT_UNFREEZE_FROM = {"MobileNetV2": "block_16_", "ResNet50": "conv5_"}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    backbone: str = "MobileNetV2"
    img_dim: int = 128
    heads: tuple = ("age_histogram",)
    alpha: float = 1.0
    weights: str = "imagenet"  # as --weights and keras.applications; "none" for random weights
    dropout: float = 0.2
    # None keeps Keras' (0.999 for MobileNetV2): right for long runs, but short runs from
    # scratch need faster-moving statistics or inference-mode predictions are garbage.
    batchnorm_momentum: float | None = None

    def __post_init__(self):
        check_backbone(self.backbone, self.img_dim)
        head_names.validate_heads(self.heads)
        check.positive("alpha", self.alpha)
        check.within("dropout", self.dropout, 0.0, 1.0, (True, False), "0.2")
        check.within("batchnorm_momentum", self.batchnorm_momentum, 0.0, 1.0, (False, False), "0.9")
        _check_weights_file(self.weights)


def check_backbone(backbone, img_dim):
    """The one check of a backbone's name and of the input size it accepts."""
    check.one_of("base_model", backbone, BACKBONES)
    minimum = MIN_IMG_DIM[backbone]
    if not isinstance(img_dim, int) or img_dim < minimum:
        raise UsageError(f"--img_dim={img_dim} is below {backbone}'s minimum of {minimum}; "
                         f"use --img_dim={minimum} or more")


_WEIGHTS_FIX = ("pass --weights=imagenet, --weights=none or the path of a backbone weights file "
                "(a .weights.h5 written by keras' save_weights, or keras.applications' .h5)")
_SAVE_BACKBONE = ("pass a backbone's, saved with model.get_layer('backbone').save_weights("
                  "'NAME.weights.h5') (docs/training.md)")


def _check_weights_file(weights):
    """A one-line UsageError unless weights is imagenet, none, or an HDF5 file Keras can read.

    Keras picks a file's reader by its name: save_weights' layout from *.weights.h5, the
    legacy layout (keras.applications' files) from any other *.h5 or *.hdf5.
    """
    if weights is None or weights.lower() in ("imagenet", "none"):
        return
    if not os.path.exists(weights):
        raise UsageError(f"weights file {weights} does not exist; {_WEIGHTS_FIX}")
    if os.path.isdir(weights):
        raise UsageError(f"weights file {weights} is a directory; {_WEIGHTS_FIX}")
    if weights.endswith(".keras"):
        raise UsageError(f"weights file {weights} is a whole saved model; {_SAVE_BACKBONE}")
    layout = _weights_layout(weights)
    if layout == "keras_3_model":
        raise UsageError(f"weights file {weights} holds a whole model's weights; {_SAVE_BACKBONE}")
    keras_3_name = weights.endswith(".weights.h5")
    if layout == "keras_3" and not keras_3_name:
        raise UsageError(f"weights file {weights} holds weights written by Keras 3's "
                         "save_weights, which Keras reads only from a name ending in "
                         ".weights.h5; rename it")
    if layout == "legacy" and (keras_3_name or not weights.endswith((".h5", ".hdf5"))):
        raise UsageError(f"weights file {weights} holds legacy .h5 weights (keras.applications' "
                         "layout), which Keras reads only from a name ending in .h5 but not "
                         ".weights.h5; rename it")


def _weights_layout(path):
    """'legacy' (a layer_names attribute), 'keras_3' (save_weights' layers group) or
    'keras_3_model' (a whole model's save_weights, its backbone one of its layers)."""
    import h5py  # installed with Keras; imported here so that config stays light

    try:
        with h5py.File(path, "r") as file:
            if "layer_names" in file.attrs or "model_weights" in file:
                return "legacy"
            if "layers" in file or "vars" in file:
                # A whole agetf model's save_weights: the backbone is its layers/functional.
                whole = "functional" in file.get("layers", {}) and "conv2d" not in file["layers"]
                return "keras_3_model" if whole else "keras_3"
    except OSError as error:  # not HDF5, truncated, or unreadable
        text = " ".join(str(error).split())  # h5py's can span lines
        reason = text.partition("(")[2].removesuffix(")") or text
        raise UsageError(f"weights file {path} is not a readable HDF5 file ({reason}); "
                         f"{_WEIGHTS_FIX}") from None
    raise UsageError(f"weights file {path} holds no Keras weights (no layers group, no "
                     f"layer_names attribute); {_WEIGHTS_FIX}")
