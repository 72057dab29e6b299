"""The stages of a run: one (TRAIN) without --fine_tuning; with it, the heads train on a
FROZEN_BACKBONE for --head_epochs, then FINE_TUNE unfreezes the top of the backbone for
--fine_tune_epochs with a fresh optimizer and its own learning rate.

Early stopping ends a stage early: FROZEN_BACKBONE gives way to FINE_TUNE at the epoch it
stopped, which is why the epoch FINE_TUNE starts at is kept in the checkpoint, not derived.
"""

import dataclasses

from agetf import UsageError
from agetf.config import CosineSchedule, CyclicSchedule, Stage
from agetf.modeling import model as model_lib
from agetf.modeling.model_config import DEFAULT_UNFREEZE_FROM
from agetf.training import schedules

__all__ = ["Stage", "check_schedules", "describe_fine_tune_stage", "stage_for_epoch",
           "stage_lr_and_epochs", "stage_schedule", "training_stages", "unfreeze_prefix"]

_EPOCHS_FLAGS = {Stage.TRAIN: "--epochs", Stage.FROZEN_BACKBONE: "--head_epochs",
                 Stage.FINE_TUNE: "--fine_tune_epochs"}


def stage_for_epoch(config, epoch, fine_tune_start_epoch):
    """The stage epoch `epoch` (0-based) belongs to."""
    if not config.fine_tune.enabled:
        return Stage.TRAIN
    # --fine_tune_epochs=0 trains the heads alone: the run ends in stage 1, and its end (or
    # a rerun of it) must not enter a stage 2 of no steps.
    if epoch < fine_tune_start_epoch or config.fine_tune.fine_tune_epochs == 0:
        return Stage.FROZEN_BACKBONE
    return Stage.FINE_TUNE


def stage_lr_and_epochs(config, stage):
    """The base learning rate and the length in epochs of `stage`."""
    fine_tune = config.fine_tune
    if stage is Stage.FINE_TUNE:
        return fine_tune.fine_tune_lr, fine_tune.fine_tune_epochs
    return config.lr, fine_tune.head_epochs if stage is Stage.FROZEN_BACKBONE else config.epochs


def training_stages(config):
    """The stages a run goes through; a stage of 0 epochs is never entered."""
    if not config.fine_tune.enabled:
        return (Stage.TRAIN,)
    return tuple(stage for stage in (Stage.FROZEN_BACKBONE, Stage.FINE_TUNE)
                 if stage_lr_and_epochs(config, stage)[1] > 0)


def stage_schedule(config, stage, steps_per_epoch):
    """(the schedule settings of `stage`, a warning line or None). A cosine warm-up as long as
    the stage (a flagfile's --warmup_epochs=1 with --epochs=1) is cut to half the stage, so a
    short run still runs, with a warning saying so."""
    schedule = config.schedule
    _, epochs = stage_lr_and_epochs(config, stage)
    total = epochs * steps_per_epoch
    if not isinstance(schedule, CosineSchedule) or total < 1:
        return schedule, None
    warmup = schedules.warmup_steps(schedule, steps_per_epoch)
    if warmup < total:
        return schedule, None
    asked = (f"warmup_steps={schedule.warmup_steps}" if schedule.warmup_steps > 0
             else f"--warmup_epochs={schedule.warmup_epochs:g}")
    shortened = dataclasses.replace(schedule, warmup_steps=total // 2, warmup_epochs=0)
    return shortened, (f"the cosine warm-up ({asked}, {warmup} steps) is as long as stage "
                       f"{stage.value} ({_EPOCHS_FLAGS[stage]}={epochs}, {total} steps); warming "
                       f"up for {total // 2} steps instead, half the stage")


def check_schedules(config, steps_per_epoch):
    """Refuses schedule settings that cannot work in some stage before anything is built, not
    a stage later; returns the warning lines of what it adjusted (a warm-up as long as a
    stage)."""
    warnings = []
    for stage in training_stages(config):
        lr, epochs = stage_lr_and_epochs(config, stage)
        schedule, warning = stage_schedule(config, stage, steps_per_epoch)
        try:
            schedules.make_schedule(schedule, lr=lr, steps_per_epoch=steps_per_epoch,
                                    total_steps=epochs * steps_per_epoch)
        except ValueError as error:
            raise UsageError(f"--lr_scheduler={schedule.name} in stage {stage.value} "
                             f"({_EPOCHS_FLAGS[stage]}={epochs}, {epochs * steps_per_epoch} "
                             f"steps): {error}") from None
        if warning:
            warnings.append(warning)
    return warnings


def unfreeze_prefix(config):
    """The layer-name prefix FINE_TUNE unfreezes from: --unfreeze_from, else the backbone's."""
    prefix = config.fine_tune.unfreeze_from
    return DEFAULT_UNFREEZE_FROM[config.model.backbone] if prefix is None else prefix


def set_trainable_for(model, config, stage):
    """Freezes and unfreezes `model`'s layers as `stage` trains them."""
    if stage is Stage.TRAIN:
        model_lib.unfreeze_all(model)
    elif stage is Stage.FROZEN_BACKBONE:
        model_lib.set_trainable(model, unfreeze_from=None)
    else:
        model_lib.set_trainable(model, unfreeze_from=unfreeze_prefix(config),
                                train_batchnorm=config.fine_tune.batchnorm == "train")


def describe_fine_tune_stage(config, schedule):
    """The log line of FINE_TUNE: what it unfreezes and the learning rate it really uses."""
    prefix = unfreeze_prefix(config)
    if prefix == "":
        unfrozen = "unfreezing the whole backbone (--unfreeze_from='')"
    else:
        default = " (the default)" if config.fine_tune.unfreeze_from is None else ""
        unfrozen = f"unfreezing the backbone from its first layer named {prefix}*{default}"
    if isinstance(config.schedule, CyclicSchedule):
        lr = (f"lr cycling {schedule.base_lr:g}..{schedule.max_lr:g} "
              "(cyclic_lr ignores --fine_tune_lr)")
    else:
        lr = f"lr {config.fine_tune.fine_tune_lr:g} ({config.schedule.name})"
    batchnorm = ("BatchNorm layers kept frozen" if config.fine_tune.batchnorm == "frozen"
                 else "its BatchNorm layers training (--fine_tune_batchnorm=train)")
    return f"Stage {Stage.FINE_TUNE.value}: {unfrozen}, {batchnorm}; fresh optimizer; {lr}"
