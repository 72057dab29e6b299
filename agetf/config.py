"""The settings of a training run, as typed frozen dataclasses that check themselves once.

agetf.train turns its flags into one TrainConfig (`build_config`); a notebook builds one
directly and calls `agetf.training.train_lib.run(config)`. Each dataclass checks its own
values when it is made, with messages that name the flag and the fix, so nothing later
checks them again. No TensorFlow here: a bad value costs no TensorFlow start-up. The
settings of the input and of the model live beside the code that reads them
(agetf.data.input_config, agetf.modeling.model_config).

    from agetf import config
    from agetf.data.input_config import InputConfig
    from agetf.modeling.model_config import ModelConfig
    run = config.TrainConfig(
        model_dir="runs/notebook",
        input=InputConfig(data_dir="tfrecords/synthetic", img_dim=64),
        model=ModelConfig(img_dim=64, heads=("age_histogram", "gender"), weights="none"),
        epochs=2, schedule=config.CosineSchedule(warmup_epochs=0.5))
"""

import dataclasses
import enum
import os
from typing import ClassVar

from agetf import UsageError
from agetf.common import head_names
from agetf.common import setting_checks as check
from agetf.data.input_config import InputConfig
from agetf.modeling.model_config import ModelConfig

# The vocabulary of settings: names the flags accept and the modules that act on them share.
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
        check.one_of("plateau_mode", self.mode, PLATEAU_MODES)
        check.within("plateau_factor", self.factor, 0.0, 1.0, (False, False), "0.2")
        check.at_least("plateau_patience", self.patience, 0, " epochs")
        check.at_least("plateau_cooldown", self.cooldown, 0, " epochs")
        check.at_least("plateau_min_lr", self.min_lr, 0)


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
        check.one_of("clr_mode", self.mode, CYCLIC_MODES)
        check.positive("clr_base_lr", self.base_lr)
        check.positive("clr_half_cycle_epochs", self.half_cycle_epochs)
        check.at_least("clr_half_cycle_steps", self.half_cycle_steps, 0,
                  " (0: use --clr_half_cycle_epochs)")
        check.within("clr_gamma", self.gamma, 0.0, 1.0, (False, True), "0.99")
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
        check.at_least("warmup_epochs", self.warmup_epochs, 0)
        check.at_least("cosine_min_lr", self.min_lr, 0)
        check.at_least("warmup_steps", self.warmup_steps, 0)


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
        check.one_of("fine_tune_batchnorm", self.batchnorm, FINE_TUNE_BATCHNORM)
        check.at_least("head_epochs", self.head_epochs, 0)
        check.at_least("fine_tune_epochs", self.fine_tune_epochs, 0)
        check.positive("fine_tune_lr", self.fine_tune_lr)
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
        check.positive("lr_find_min", self.min_lr)
        check.positive("lr_find_epochs", self.epochs)
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
        check.one_of("eval_split", self.split, EVAL_SPLITS)
        check.one_of("eval_protocol", self.protocol, EVAL_PROTOCOLS)
        check.at_least("print_predictions", self.print_predictions, 0, " (0: none)")

    @property
    def report_name(self):
        """The report's file, named by split and protocol so that no evaluation overwrites
        another's: evaluation.json for test under `random`, else evaluation_SPLIT.json,
        evaluation_PROTOCOL.json or evaluation_SPLIT_PROTOCOL.json."""
        return self.dataset_report_name(None)

    def dataset_report_name(self, dataset):
        """report_name with the dataset's folder name first (evaluation_DATASET.json,
        evaluation_DATASET_SPLIT.json, ...): a run on several datasets reports each alone."""
        parts = [part for part, usual in ((self.split, "test"), (self.protocol, "random"))
                 if part != usual]
        return "_".join(["evaluation", *([dataset] if dataset else []), *parts]) + ".json"


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
        check.one_of("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        check.at_least("steps_per_loop", self.steps_per_loop, 1)
        check.at_least("collective_timeout", self.collective_timeout, 0,
                  " seconds (0 waits for ever)")
        check.at_least("worker_startup_timeout", self.worker_startup_timeout, 0,
                  " seconds (0 waits for ever)")
        if self.tpu and self.strategy != "tpu":
            raise UsageError(f"--tpu={self.tpu} applies to --strategy=tpu only; add "
                             "--strategy=tpu or drop --tpu")
        if self.profile_steps is not None:
            check_profile_steps(self.profile_steps)


def profile_steps_error(text):
    """The one message for a --profile_steps value that is not a window of steps."""
    return (f"--profile_steps={text} must be START,END: two whole numbers with "
            "0 <= START < END, e.g. --profile_steps=10,20")


def check_profile_steps(steps):
    """(START, END) as whole numbers; a UsageError unless 0 <= START < END."""
    start, end = steps
    if not 0 <= start < end:
        raise UsageError(profile_steps_error(f"{start},{end}"))
    return int(start), int(end)


def check_init_from(init_from, model_dir):
    """The one check of --init_from's value (whether it holds a model, the trainer checks)."""
    if not init_from or "://" in init_from:
        raise UsageError(f"--init_from={init_from} must be the --model_dir of a finished run, a "
                         "local or mounted folder")
    if os.path.abspath(init_from) == os.path.abspath(model_dir):
        raise UsageError(f"--init_from={init_from} is this run's own --model_dir; rerunning a "
                         "run resumes it without --init_from: give the new run its own "
                         "--model_dir")


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
    # A finished run's model_dir whose weights a new run starts from (agetf.training.warm_start).
    init_from: str | None = None

    def __post_init__(self):
        if "://" in self.model_dir:  # its lock, renames and checkpoints are local-file calls
            raise UsageError(f"--model_dir={self.model_dir} must be a local or mounted folder, "
                             "not a URL; mount the storage (e.g. with gcsfuse) and give its path")
        if self.init_from is not None:
            check_init_from(self.init_from, self.model_dir)
        check.at_least("batch_size", self.batch_size, 1)
        check.at_least("epochs", self.epochs, 1)
        if not self.lr > 0:  # `not >`: NaN fails too
            raise UsageError(f"--lr={check.shown(self.lr)} must be > 0, or 'auto'")
        check.one_of("optimizer", self.optimizer, OPTIMIZERS)
        check.within("momentum", self.momentum, 0.0, 1.0, (True, False), "0.9")
        check.one_of("regression_loss", self.regression_loss, REGRESSION_LOSSES)
        check.at_least("steps_per_epoch", self.steps_per_epoch, 0,
                  " (0: one pass over the training split)")
        check.at_least("validation_steps", self.validation_steps, 0,
                  " (0: the whole validation split)")
        check.at_least("checkpoint_every_steps", self.checkpoint_every_steps, 0,
                  " (0: at epoch ends only)")
        check.at_least("summary_images", self.summary_images, 0, " (0: none)")
        check.at_least("early_stopping_patience", self.early_stopping_patience, 0, " (0: off)")
        if self.input is not None and self.input.img_dim != self.model.img_dim:
            raise UsageError(f"the input's img_dim ({self.input.img_dim}) differs from the "
                             f"model's ({self.model.img_dim}); give both the same --img_dim")
        not_heads = [head for head in self.loss_weights if head not in head_names.HEADS]
        if not_heads:
            raise UsageError(f"--loss_weights names {', '.join(not_heads)}, which is no head; "
                             f"use one of {', '.join(head_names.HEADS)}")
        reported = head_names.metric_names(self.model.heads)
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
    def planned_epochs(self):
        """--epochs, or --head_epochs plus --fine_tune_epochs (early stopping may end stage 1
        sooner: the trainer's total_epochs is what a run actually trains)."""
        if self.fine_tune.enabled:
            return self.fine_tune.head_epochs + self.fine_tune.fine_tune_epochs
        return self.epochs
