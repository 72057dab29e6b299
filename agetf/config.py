"""Every setting of a run, as typed frozen dataclasses that check themselves once.

The entry points turn flags into these (agetf.train's `build_config`); a notebook builds
them directly and calls `agetf.training.job.run(config)`. Each dataclass checks its own
values when it is made, with messages that name the flag and the fix, so nothing later
checks them again. No TensorFlow here: a bad value costs no TensorFlow start-up.

    from agetf import config
    run = config.TrainConfig(
        model_dir="runs/notebook",
        input=config.InputConfig(data_dir="tfrecords/synthetic", img_dim=64),
        model=config.ModelConfig(img_dim=64, heads=("age_histogram", "gender"), weights="none"),
        epochs=2, schedule=config.CosineSchedule(warmup_epochs=0.5))
"""

import dataclasses
import enum
import os
from typing import ClassVar

from agetf import UsageError
from agetf.modeling import heads as heads_lib

__all__ = ["UsageError"]  # and every dataclass and name below


# The vocabulary of settings: names the flags accept and the modules that act on them share.
BACKBONES = ("MobileNetV2", "ResNet50")
# keras.applications' obtain_input_shape(min_size=32) for both backbones.
MIN_IMG_DIM = {"MobileNetV2": 32, "ResNet50": 32}
# Fine-tuning starts here by default: MobileNetV2's last inverted-residual block and
# Conv_1, and ResNet50's last stage (the older project's `layers[152:]`, by name).
DEFAULT_UNFREEZE_FROM = {"MobileNetV2": "block_16_", "ResNet50": "conv5_"}
STRATEGIES = ("auto", "default", "mirrored", "multi_worker_mirrored", "tpu")
MIXED_PRECISION = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("adam", "sgd")
REGRESSION_LOSSES = ("mse", "huber")
EVAL_SPLITS = ("test", "validation")
# Which test images an evaluation counts, and what each protocol means.
EVAL_PROTOCOLS = {
    "random": "every image of the split (hash-based random split)",
    "ages_21_60": "images aged 21 to 60 only (the ordinal-regression papers' UTKFace protocol)",
}
PLATEAU_MODES = ("min", "max", "auto")
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


class Stage(str, enum.Enum):
    """A stage of training. Without --fine_tuning a run has one, TRAIN; with it, the heads train
    on a FROZEN_BACKBONE, then FINE_TUNE unfreezes the top of the backbone."""

    TRAIN = "train"
    FROZEN_BACKBONE = "frozen_backbone"
    FINE_TUNE = "fine_tune"


# -- checks, each naming the flag ---------------------------------------------------------

def _shown(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def _at_least(flag, value, minimum, meaning=""):
    if not value >= minimum:  # `not >=`: NaN fails too
        raise UsageError(f"--{flag}={_shown(value)} must be >= {minimum}{meaning}")


def _positive(flag, value):
    if value is not None and not value > 0:
        raise UsageError(f"--{flag}={_shown(value)} must be > 0")


def _within(flag, value, low, high, ends, example):
    """`value` in the interval low..high; `ends`: (low allowed, high allowed). None passes."""
    if value is None:
        return
    low_ok, high_ok = ends
    above = low <= value if low_ok else low < value
    below = value <= high if high_ok else value < high
    if not (above and below):
        interval = f"{'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"
        raise UsageError(f"--{flag}={_shown(value)} must be in {interval}, e.g. --{flag}={example}")


def _one_of(flag, value, allowed):
    if value not in allowed:
        raise UsageError(f"--{flag}={value} is unknown; use one of {', '.join(allowed)}")


# -- data ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """How strongly to augment training images; the defaults are mild, face-preserving."""

    flip: bool = True
    # Area fraction of the random crop; above 1 zooms out: the box is larger than the image,
    # whose mirror image fills the border (a loosely framed face). At most 2.
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_aspect: tuple[float, float] = (0.9, 1.1)  # crop width / height, relative to the image
    brightness: float = 0.15  # max delta as a fraction of 255
    contrast: tuple[float, float] = (0.8, 1.2)
    blur_probability: float = 0.1  # light 3x3 blur
    grey_probability: float = 0.0  # luminance in all three channels, after the crop

    def __post_init__(self):
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 2:
            shown = ",".join(_shown(value) for value in self.crop_scale)
            raise UsageError(f"--crop_scale={shown} must be LOW,HIGH with 0 < LOW <= HIGH <= 2 "
                             "(area fractions; above 1 zooms out), e.g. --crop_scale=0.8,1.4")
        low, high = self.crop_aspect
        if not 0 < low <= high:
            raise UsageError(f"crop_aspect must satisfy 0 < low <= high, got {self.crop_aspect}")
        low, high = self.contrast
        if not 0 <= low <= high:
            raise UsageError(f"contrast must satisfy 0 <= low <= high, got {self.contrast}")
        if not 0 <= self.brightness <= 1:
            raise UsageError(f"brightness must be in [0, 1], got {self.brightness}")
        if not 0 <= self.blur_probability <= 1:
            raise UsageError(f"blur_probability must be in [0, 1], got {self.blur_probability}")
        _within("grey_probability", self.grey_probability, 0, 1, (True, True), "0.1")


NO_AUGMENTATION = AugmentConfig(flip=False, crop_scale=(1.0, 1.0), crop_aspect=(1.0, 1.0),
                                brightness=0.0, contrast=(1.0, 1.0), blur_probability=0.0,
                                grey_probability=0.0)


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """Where the data is and how to read it; one per dataset, shared by train and eval."""

    data_dir: str
    img_dim: int = 128
    shuffle_buffer: int = 2048
    cache: bool = False  # cache decoded images (after decode, before augment) in memory
    augment: AugmentConfig = AugmentConfig()
    age_deviation: float | None = None  # None: the histogram stored in the records
    skip_corrupt_records: bool = False
    threads: int | None = None  # private thread pool size; None = tf.data default
    seed: int | None = None
    data_service: str | None = None  # grpc://HOST:PORT: training preprocessing runs there

    def __post_init__(self):
        _at_least("shuffle_buffer", self.shuffle_buffer, 1, " (1: no shuffling)")
        _positive("age_deviation", self.age_deviation)


# -- model --------------------------------------------------------------------------------

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
        heads_lib.validate_heads(self.heads)
        _positive("alpha", self.alpha)
        _within("dropout", self.dropout, 0.0, 1.0, (True, False), "0.2")
        _within("batchnorm_momentum", self.batchnorm_momentum, 0.0, 1.0, (False, False), "0.9")
        _check_weights_file(self.weights)


def check_backbone(backbone, img_dim):
    """The one check of a backbone's name and of the input size it accepts."""
    _one_of("base_model", backbone, BACKBONES)
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


# -- learning-rate schedules: one dataclass each --------------------------------------------

@dataclasses.dataclass(frozen=True)
class ConstantSchedule:
    name: ClassVar[str] = "constant"


@dataclasses.dataclass(frozen=True)
class PlateauSchedule:
    """ReduceLROnPlateau: multiply the LR by `factor` after `patience` epochs without
    improvement of `monitor` (mode auto: rise for accuracies and CS@5, else fall)."""

    name: ClassVar[str] = "reduce_lr_on_plateau"
    monitor: str = "val_loss"
    mode: str = "auto"
    factor: float = 0.2
    patience: int = 3
    cooldown: int = 0
    min_lr: float = 1e-6
    min_delta: float = 1e-4

    def __post_init__(self):
        _one_of("plateau_mode", self.mode, PLATEAU_MODES)
        _within("plateau_factor", self.factor, 0.0, 1.0, (False, False), "0.2")
        _at_least("plateau_patience", self.patience, 0, " epochs")
        _at_least("plateau_cooldown", self.cooldown, 0, " epochs")
        _at_least("plateau_min_lr", self.min_lr, 0)


@dataclasses.dataclass(frozen=True)
class CyclicSchedule:
    """CyclicLR between base_lr and max_lr, a half cycle of half_cycle_steps (when > 0) or
    half_cycle_epochs."""

    name: ClassVar[str] = "cyclic_lr"
    base_lr: float = 1e-4
    max_lr: float = 1e-1
    mode: str = "triangular"
    gamma: float = 1.0
    half_cycle_epochs: float = 8
    half_cycle_steps: int = 0

    def __post_init__(self):
        _one_of("clr_mode", self.mode, CYCLIC_MODES)
        _positive("clr_base_lr", self.base_lr)
        _positive("clr_half_cycle_epochs", self.half_cycle_epochs)
        _at_least("clr_half_cycle_steps", self.half_cycle_steps, 0,
                  " (0: use --clr_half_cycle_epochs)")
        _within("clr_gamma", self.gamma, 0.0, 1.0, (False, True), "0.99")
        if not self.max_lr >= self.base_lr:
            raise UsageError(f"--clr_max_lr={self.max_lr:g} must be >= "
                             f"--clr_base_lr={self.base_lr:g}")


@dataclasses.dataclass(frozen=True)
class CosineSchedule:
    """Linear warm-up (warmup_steps when > 0, else warmup_epochs), then cosine decay to min_lr."""

    name: ClassVar[str] = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    warmup_steps: int = 0

    def __post_init__(self):
        _at_least("warmup_epochs", self.warmup_epochs, 0)
        _at_least("cosine_min_lr", self.min_lr, 0)
        _at_least("warmup_steps", self.warmup_steps, 0)


SCHEDULES = {cls.name: cls for cls in (ConstantSchedule, PlateauSchedule, CyclicSchedule,
                                       CosineSchedule)}
Schedule = ConstantSchedule | PlateauSchedule | CyclicSchedule | CosineSchedule


# -- the rest of a run ----------------------------------------------------------------------

FINE_TUNE_BATCHNORM = ("frozen", "train")


@dataclasses.dataclass(frozen=True)
class FineTuneConfig:
    enabled: bool = False
    head_epochs: int = 10
    fine_tune_epochs: int = 35
    fine_tune_lr: float = 1e-4
    unfreeze_from: str | None = None  # None: the backbone's default (DEFAULT_UNFREEZE_FROM)
    # Stage 2's unfrozen BatchNorm layers: "frozen" runs them in inference mode with
    # ImageNet's statistics; "train" lets them normalize by batch and learn the new data's.
    batchnorm: str = "frozen"

    def __post_init__(self):
        _one_of("fine_tune_batchnorm", self.batchnorm, FINE_TUNE_BATCHNORM)
        _at_least("head_epochs", self.head_epochs, 0)
        _at_least("fine_tune_epochs", self.fine_tune_epochs, 0)
        _positive("fine_tune_lr", self.fine_tune_lr)
        if self.enabled and self.head_epochs + self.fine_tune_epochs < 1:
            raise UsageError("--head_epochs=0 and --fine_tune_epochs=0 train nothing; give one "
                             "of them 1 or more, or drop --fine_tuning")


@dataclasses.dataclass(frozen=True)
class LRFinderConfig:
    """The LR range test: `find_only` runs it and stops (--lr_find); `use_suggestion` trains
    with what it suggests (--lr=auto); steps, when > 0, overrides epochs."""

    find_only: bool = False
    use_suggestion: bool = False
    min_lr: float = 1e-10
    max_lr: float = 10.0
    epochs: float = 3.0
    steps: int = 0

    @property
    def runs(self):
        return self.find_only or self.use_suggestion

    def __post_init__(self):
        _positive("lr_find_min", self.min_lr)
        _positive("lr_find_epochs", self.epochs)
        if self.steps != 0 and self.steps < 2:
            raise UsageError(f"--lr_find_steps={self.steps} must be 0 (use --lr_find_epochs) "
                             "or >= 2")
        if not self.max_lr > self.min_lr:
            raise UsageError(f"--lr_find_max={self.max_lr:g} must be above "
                             f"--lr_find_min={self.min_lr:g}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What the end of training and --load evaluate, and how. `flip_average`: each face's and
    its mirror image's outputs averaged (--test_time_flip), in evaluation and export alike."""

    split: str = "test"
    protocol: str = "random"
    flip_average: bool = False
    print_predictions: int = 10
    batch_size: int = 64

    def __post_init__(self):
        _one_of("eval_split", self.split, EVAL_SPLITS)
        _one_of("eval_protocol", self.protocol, EVAL_PROTOCOLS)
        _at_least("print_predictions", self.print_predictions, 0, " (0: none)")

    @property
    def report_name(self):
        """The report's file, named by split and protocol so that no evaluation overwrites
        another's: evaluation.json for test under `random`, else evaluation_SPLIT.json,
        evaluation_PROTOCOL.json or evaluation_SPLIT_PROTOCOL.json."""
        parts = [part for part, usual in ((self.split, "test"), (self.protocol, "random"))
                 if part != usual]
        return "_".join(["evaluation", *parts]) + ".json"


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """`saved_model`: export one after training, to `export_dir` (None: MODEL_DIR/saved_model);
    `tflite`: also the TFLite models, to MODEL_DIR/tflite."""

    saved_model: bool = True
    export_dir: str | None = None
    tflite: bool = False


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how the steps run; none of it changes what is learned."""

    strategy: str = "auto"
    tpu: str = ""
    collective_timeout: float = 600  # multi-worker: seconds a collective may wait; 0 = forever
    worker_startup_timeout: float = 300  # multi-worker: seconds to wait for every worker
    mixed_precision: str = "auto"
    jit_compile: bool = False
    steps_per_loop: int = 10
    profile_steps: tuple | None = None  # (START, END): profile global steps START..END-1

    def __post_init__(self):
        check_strategy(self.strategy)
        _one_of("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        _at_least("steps_per_loop", self.steps_per_loop, 1)
        _at_least("collective_timeout", self.collective_timeout, 0,
                  " seconds (0 waits for ever)")
        _at_least("worker_startup_timeout", self.worker_startup_timeout, 0,
                  " seconds (0 waits for ever)")
        if self.tpu and self.strategy != "tpu":
            raise UsageError(f"--tpu={self.tpu} applies to --strategy=tpu only; add "
                             "--strategy=tpu or drop --tpu")
        if self.profile_steps is not None:
            start, end = self.profile_steps
            if not 0 <= start < end:
                raise UsageError(f"--profile_steps={start},{end} must be START,END: two whole "
                                 "numbers with 0 <= START < END, e.g. --profile_steps=10,20")


def check_strategy(name):
    """The one check of a --strategy name."""
    if name not in STRATEGIES:
        raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)}; got {name!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str
    input: InputConfig
    model: ModelConfig = ModelConfig()
    epochs: int = 30
    batch_size: int = 32  # global, over all replicas and workers
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    loss_weights: dict = dataclasses.field(default_factory=dict)
    regression_loss: str = "mse"
    schedule: Schedule = ConstantSchedule()
    fine_tune: FineTuneConfig = FineTuneConfig()
    lr_finder: LRFinderConfig = LRFinderConfig()
    evaluation: EvalConfig = EvalConfig()
    export: ExportConfig = ExportConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    steps_per_epoch: int = 0  # 0: one pass over the training split
    validation_steps: int = 0  # 0: the whole validation split
    checkpoint_every_steps: int = 0  # 0: at epoch ends only
    keep_checkpoints: int = 3
    best_metric: str = "val_loss"
    early_stopping_patience: int = 0  # 0: off
    summary_images: int = 8
    verbose: bool = True

    def __post_init__(self):
        if "://" in self.model_dir:  # its lock, renames and checkpoints are local-file calls
            raise UsageError(f"--model_dir={self.model_dir} must be a local or mounted folder, "
                             "not a URL; mount the storage (e.g. with gcsfuse) and give its path")
        _at_least("batch_size", self.batch_size, 1)
        _at_least("epochs", self.epochs, 1)
        _positive("lr", self.lr)
        _one_of("optimizer", self.optimizer, OPTIMIZERS)
        _within("momentum", self.momentum, 0.0, 1.0, (True, False), "0.9")
        _one_of("regression_loss", self.regression_loss, REGRESSION_LOSSES)
        _at_least("steps_per_epoch", self.steps_per_epoch, 0,
                  " (0: one pass over the training split)")
        _at_least("validation_steps", self.validation_steps, 0,
                  " (0: the whole validation split)")
        _at_least("checkpoint_every_steps", self.checkpoint_every_steps, 0,
                  " (0: at epoch ends only)")
        _at_least("summary_images", self.summary_images, 0, " (0: none)")
        _at_least("early_stopping_patience", self.early_stopping_patience, 0, " (0: off)")
        if self.input is not None and self.input.img_dim != self.model.img_dim:
            raise UsageError(f"the input's img_dim ({self.input.img_dim}) differs from the "
                             f"model's ({self.model.img_dim}); give both the same --img_dim")
        not_heads = [head for head in self.loss_weights if head not in heads_lib.HEADS]
        if not_heads:
            raise UsageError(f"--loss_weights names {', '.join(not_heads)}, which is no head; "
                             f"use one of {', '.join(heads_lib.HEADS)}")
        reported = heads_lib.metric_names(self.model.heads)
        allowed = ["val_" + name for name in reported]
        if self.best_metric not in allowed:
            raise UsageError(f"--best_metric={self.best_metric} is not reported for these "
                             f"heads; use one of {', '.join(allowed)}")
        if isinstance(self.schedule, PlateauSchedule):
            allowed = reported + allowed
            if self.schedule.monitor not in allowed:
                raise UsageError(f"--plateau_monitor={self.schedule.monitor} is not reported "
                                 f"for these heads; use one of {', '.join(allowed)}")

    @property
    def total_epochs(self):
        if self.fine_tune.enabled:
            return self.fine_tune.head_epochs + self.fine_tune.fine_tune_epochs
        return self.epochs
