"""The custom distributed training loop: one loop for every tf.distribute strategy.

Not `model.fit`: under MultiWorkerMirroredStrategy it fails with Keras 3 (see
design.md). A `tf.function` runs `steps_per_loop` steps of `strategy.run` per host
call; state (model, optimizer, schedule, epoch, step) lives in a `tf.train.Checkpoint`
so a rerun of the same command resumes where the last one stopped.
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from agetf.data import augment, input_pipeline
from agetf.modeling import heads, model as model_lib
from agetf.training import callbacks, distribution, profiling, run_files, schedules, termination

# Checkpointed epoch at which stage 2 of --fine_tuning begins (newer than the other objects).
_FINE_TUNE_START = "fine_tune_start_epoch"

# What must match between a model_dir and the command that resumes it.
RUN_DEFINING_KEYS = ("backbone", "img_dim", "heads", "alpha")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class CheckpointDamagedError(ValueError):
    """No checkpoint of a model_dir can be read; the message names the damaged files and the fix."""


def one_line(error, limit=200):
    """An exception's first line, shortened, for one-line messages."""
    text = str(error).strip()
    text = text.splitlines()[0] if text else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def checkpoint_damage(path):
    """Why checkpoint `path` cannot be read, naming the damaged file, or None when it reads.

    Reads every tensor: the reader checks each one's CRC, so a truncated or bit-flipped file is
    found here, before anything is built from the checkpoint.
    """
    try:
        reader = tf.train.load_checkpoint(path)
    except Exception as error:  # noqa: BLE001 - any failure to open the index is damage
        return f"{os.path.basename(path)}.index: {one_line(error)}"
    data = ", ".join(sorted(os.path.basename(p) for p in tf.io.gfile.glob(path + ".data-*")))
    try:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as error:  # noqa: BLE001 - DataLossError, IndexError (a short read), ...
        return f"{data or os.path.basename(path) + '.data-*'}: {one_line(error)}"
    return None


def restorable_checkpoint(checkpoint_dir, warn=logging.warning):
    """The newest checkpoint in `checkpoint_dir` that reads whole, or None when there is none.

    A damaged newer one is skipped with one `warn` line naming its file and why; when every
    checkpoint is damaged, a CheckpointDamagedError naming them and the fix.
    """
    state = tf.train.get_checkpoint_state(checkpoint_dir)
    if state is None or not state.model_checkpoint_path:
        return None
    paths = list(state.all_model_checkpoint_paths)
    if state.model_checkpoint_path not in paths:
        paths.append(state.model_checkpoint_path)
    damaged = []
    for path in reversed(paths):
        why = checkpoint_damage(path)
        if why is None:
            for skipped, reason in damaged:
                warn(f"skipping the damaged checkpoint {skipped} ({reason}); resuming from "
                     f"{os.path.basename(path)}, the newest one that reads")
            return path
        damaged.append((path, why))
    raise CheckpointDamagedError(
        f"no checkpoint in {checkpoint_dir} can be read: " + "; ".join(
            f"{os.path.basename(p)} ({why})" for p, why in damaged)
        + f"; delete {checkpoint_dir} to start the run over (or restore it from a copy)")


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


@dataclasses.dataclass(frozen=True)
class FineTuneConfig:
    enabled: bool = False
    head_epochs: int = 10
    fine_tune_epochs: int = 35
    fine_tune_lr: float = 1e-4
    unfreeze_from: str | None = None  # None: the backbone's default (model.DEFAULT_UNFREEZE_FROM)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str
    input: input_pipeline.InputConfig
    model: ModelConfig = ModelConfig()
    epochs: int = 30
    batch_size: int = 32  # global, over all replicas and workers
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    loss_weights: dict = dataclasses.field(default_factory=dict)
    regression_loss: str = "mse"
    schedule: str = "constant"
    schedule_params: dict = dataclasses.field(default_factory=dict)
    fine_tune: FineTuneConfig = FineTuneConfig()
    strategy: str = "auto"
    mixed_precision: str = "auto"
    jit_compile: bool = False
    steps_per_loop: int = 10
    steps_per_epoch: int = 0  # 0: one pass over the training split
    validation_steps: int = 0  # 0: the whole validation split
    checkpoint_every_steps: int = 0  # 0: at epoch ends only
    keep_checkpoints: int = 3
    best_metric: str = "val_loss"
    early_stopping_patience: int = 0  # 0: off
    summary_images: int = 8
    profile_steps: tuple | None = None  # (START, END): profile global steps START..END-1
    verbose: bool = True

    @property
    def total_epochs(self):
        if self.fine_tune.enabled:
            return self.fine_tune.head_epochs + self.fine_tune.fine_tune_epochs
        return self.epochs


def run_definition(model_config):
    """The part of a configuration that a resumed run must share with the original."""
    definition = {key: (list(value) if isinstance(value, tuple) else value)
                  for key, value in dataclasses.asdict(model_config).items()
                  if key in RUN_DEFINING_KEYS}
    # The same heads in another order build the same model (outputs are a dict).
    definition["heads"] = list(heads.in_canonical_order(definition["heads"]))
    return definition


def check_run_definition(model_dir, model_config):
    """Refuses a model_dir whose saved run was made with a different model definition."""
    saved = run_files.read_json(os.path.join(model_dir, "run.json"))
    if saved is None:
        return
    if isinstance(saved.get("heads"), list):  # older runs saved the heads in the flags' order
        saved["heads"] = list(heads.in_canonical_order(saved["heads"]))
    wanted = run_definition(model_config)
    differing = [f"{k}: {saved.get(k)!r} in model_dir, {wanted[k]!r} now" for k in wanted
                 if saved.get(k) != wanted[k]]
    if differing:
        raise ValueError(f"--model_dir {model_dir} holds a run with a different model ("
                         + "; ".join(differing) + "); use another --model_dir or the same flags")


def stage_lr_and_epochs(config, stage):
    """The base learning rate and the length in epochs of `stage` (train, heads or fine_tune)."""
    fine_tune = config.fine_tune
    if stage == "fine_tune":
        return fine_tune.fine_tune_lr, fine_tune.fine_tune_epochs
    return config.lr, fine_tune.head_epochs if stage == "heads" else config.epochs


_EPOCHS_FLAGS = {"train": "--epochs", "heads": "--head_epochs", "fine_tune": "--fine_tune_epochs"}


def stage_schedule_params(config, stage, steps_per_epoch):
    """(schedule parameters of `stage`, a warning line or None). A cosine warm-up as long as
    the stage (a flagfile's --warmup_epochs=1 with --epochs=1) is cut to half the stage, so a
    short run still runs, with a warning saying so."""
    params = dict(config.schedule_params)
    _, epochs = stage_lr_and_epochs(config, stage)
    total = epochs * steps_per_epoch
    if config.schedule != "cosine" or total < 1:
        return params, None
    warmup, asked = params.get("warmup_steps") or 0, f"warmup_steps={params.get('warmup_steps')}"
    if warmup <= 0:  # make_schedule's rule: warmup_steps, else warmup_epochs
        warmup_epochs = params.get("warmup_epochs") or 0
        warmup, asked = round(warmup_epochs * steps_per_epoch), f"--warmup_epochs={warmup_epochs:g}"
    if warmup < total:
        return params, None
    params.update(warmup_steps=total // 2, warmup_epochs=0)
    return params, (f"the cosine warm-up ({asked}, {warmup} steps) is as long as stage {stage} "
                    f"({_EPOCHS_FLAGS[stage]}={epochs}, {total} steps); warming up for "
                    f"{total // 2} steps instead, half the stage")


def training_stages(config):
    """The stages a run goes through; a stage of 0 epochs is never entered."""
    if not config.fine_tune.enabled:
        return ("train",)
    return tuple(stage for stage in ("heads", "fine_tune")
                 if stage_lr_and_epochs(config, stage)[1] > 0)


def check_schedules(config, steps_per_epoch):
    """Refuses schedule settings that cannot work before anything is built, not an epoch or a
    stage later (an unreported plateau metric); returns the warning lines of what it adjusted
    (a warm-up as long as a stage)."""
    if config.schedule == "reduce_lr_on_plateau":
        monitor = config.schedule_params.get("plateau_monitor") or "val_loss"
        reported = heads.metric_names(config.model.heads)
        allowed = reported + ["val_" + name for name in reported]
        if monitor not in allowed:
            raise ValueError(f"--plateau_monitor={monitor} is not reported for these heads; "
                             f"use one of {', '.join(allowed)}")
    warnings = []
    for stage in training_stages(config):
        lr, epochs = stage_lr_and_epochs(config, stage)
        params, warning = stage_schedule_params(config, stage, steps_per_epoch)
        try:
            schedules.make_schedule(config.schedule, lr=lr, steps_per_epoch=steps_per_epoch,
                                    total_steps=epochs * steps_per_epoch, **params)
        except ValueError as error:
            raise ValueError(f"--lr_scheduler={config.schedule} in stage {stage} "
                             f"({_EPOCHS_FLAGS[stage]}={epochs}, {epochs * steps_per_epoch} "
                             f"steps): {error}") from None
        if warning:
            warnings.append(warning)
    return warnings


def unfreeze_prefix(config):
    """The layer-name prefix stage 2 unfreezes from: --unfreeze_from, else the backbone's default."""
    prefix = config.fine_tune.unfreeze_from
    return model_lib.DEFAULT_UNFREEZE_FROM[config.model.backbone] if prefix is None else prefix


def describe_fine_tune_stage(config, schedule):
    """The log line of stage 2: what it unfreezes and the learning rate it really uses."""
    prefix = unfreeze_prefix(config)
    if prefix == "":
        unfrozen = "unfreezing the whole backbone (--unfreeze_from='')"
    else:
        default = " (the default)" if config.fine_tune.unfreeze_from is None else ""
        unfrozen = f"unfreezing the backbone from its first layer named {prefix}*{default}"
    if isinstance(schedule, schedules.Cyclic):
        lr = (f"lr cycling {schedule.base_lr:g}..{schedule.max_lr:g} "
              "(cyclic_lr ignores --fine_tune_lr)")
    else:
        lr = f"lr {config.fine_tune.fine_tune_lr:g} ({config.schedule})"
    return f"Stage fine_tune: {unfrozen}, BatchNorm layers kept frozen; fresh optimizer; {lr}"


def _make_optimizer(name, lr, momentum, policy):
    if name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=lr)
    elif name == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=momentum, nesterov=True)
    else:
        raise ValueError(f"--optimizer must be adam or sgd; got {name!r}")
    if policy == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def set_batchnorm_momentum(model, momentum):
    """Sets the moving-average momentum of every BatchNormalization layer in `model`."""
    if not 0.0 < momentum < 1.0:
        raise ValueError(f"--batchnorm_momentum={momentum} must be in (0, 1), e.g. 0.9")
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


class Trainer:
    """Builds everything a run needs inside the strategy's scope, and trains it."""

    def __init__(self, config: TrainConfig, strategy=None):
        self.config = config
        self.strategy = strategy or distribution.make_strategy(config.strategy)
        self.chief = distribution.is_chief(self.strategy)
        replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % replicas:
            raise ValueError(f"--batch_size={config.batch_size} does not divide across {replicas} "
                             f"replicas; use a multiple of {replicas}")
        self.policy = distribution.resolve_mixed_precision(config.mixed_precision, self.strategy)
        distribution.set_precision_policy(self.policy)
        check_run_definition(config.model_dir, config.model)

        self.num_train = input_pipeline.num_examples(config.input.data_dir, "train")
        self.num_validation = input_pipeline.num_examples(config.input.data_dir, "validation")
        if self.num_train < config.batch_size:
            raise ValueError(f"the train split has {self.num_train} images, fewer than "
                             f"--batch_size={config.batch_size}; lower --batch_size")
        self.steps_per_epoch = config.steps_per_epoch or self.num_train // config.batch_size
        # Said when training starts (fit), so a trainer that never trains (the LR finder's)
        # does not repeat them.
        self.schedule_warnings = check_schedules(config, self.steps_per_epoch)

        # The chief's steps only: every worker runs the same ones.
        self.profiler = profiling.StepProfiler(config.profile_steps if self.chief else None,
                                               os.path.join(config.model_dir, "logs"),
                                               log=self._log)
        self.restore_dir = os.path.join(config.model_dir, "checkpoints")
        self.checkpoint_dir = distribution.worker_dir(config.model_dir, self.strategy, "checkpoints")
        latest = restorable_checkpoint(self.restore_dir, warn=self._warn)
        saved = {name.split("/")[0] for name, _ in tf.train.list_variables(latest)} if latest else ()
        start_epoch = int(tf.train.load_variable(latest, "epoch/.ATTRIBUTES/VARIABLE_VALUE")) if latest else 0
        # Where stage 2 begins: after --head_epochs, or earlier when early stopping ended stage 1.
        fine_tune_start = config.fine_tune.head_epochs
        if _FINE_TUNE_START in saved:
            fine_tune_start = int(tf.train.load_variable(
                latest, f"{_FINE_TUNE_START}/.ATTRIBUTES/VARIABLE_VALUE"))

        mc = config.model
        with self.strategy.scope():
            self.model = model_lib.build_model(backbone=mc.backbone, img_dim=mc.img_dim,
                                               heads=mc.heads, alpha=mc.alpha, weights=mc.weights,
                                               dropout=mc.dropout)
            if mc.batchnorm_momentum is not None:
                set_batchnorm_momentum(self.model, mc.batchnorm_momentum)
            counter = dict(trainable=False, dtype=tf.int64,
                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.epoch = tf.Variable(0, name="epoch", **counter)
            self.step_in_epoch = tf.Variable(0, name="step_in_epoch", **counter)
            self.global_step = tf.Variable(0, name="global_step", **counter)
            self.fine_tune_start_epoch = tf.Variable(fine_tune_start, name=_FINE_TUNE_START,
                                                     **counter)
            self.train_metrics = heads.MetricSet(mc.heads)
            self.val_metrics = heads.MetricSet(mc.heads, prefix="val_")
        self.train_data = self.strategy.distribute_datasets_from_function(
            lambda ctx: self._dataset("train", ctx, training=True))
        self.stage = None
        self._enter_stage(self.stage_for_epoch(start_epoch))
        if latest:
            try:
                self._restoring_checkpoint(saved).restore(latest).assert_existing_objects_matched()
            except (tf.errors.DataLossError, IndexError) as error:  # damaged after the check
                raise CheckpointDamagedError(
                    f"the checkpoint {latest} is damaged ({one_line(error)}); delete it (its "
                    f"{os.path.basename(latest)}.* files) to resume from the one before, or "
                    f"delete {self.restore_dir} to start the run over") from error
            except (ValueError, AssertionError) as error:
                raise ValueError(
                    f"the checkpoint {latest} does not fit this run ({str(error).splitlines()[0][:160]}); "
                    "resume with the flags it was made with (see flags.txt there) or use a new "
                    "--model_dir") from error
            self._log(f"Resumed from {latest} at epoch {int(self.epoch.numpy())}, step {int(self.step_in_epoch.numpy())} "
                      f"of {self.steps_per_epoch}")
        self.resumed = bool(latest)

    # -- set-up -------------------------------------------------------------------------

    def _log(self, message):
        """A line of the run's story: printed, and in absl's INFO log (--log_dir's file)."""
        if self.config.verbose and self.chief:
            print(message, flush=True)
            logging.info(message)

    def _warn(self, message):
        """A warning line through absl logging (the chief's only), verbose or not."""
        if self.chief:
            logging.warning(message)

    def _dataset(self, split, input_context, training):
        batch = input_context.get_per_replica_batch_size(self.config.batch_size)
        return input_pipeline.build_dataset(self.config.input, split, batch, training=training,
                                            input_context=input_context)

    def stage_for_epoch(self, epoch):
        """`train` without fine-tuning; else `heads` (frozen backbone) then `fine_tune`."""
        if not self.config.fine_tune.enabled:
            return "train"
        return "heads" if epoch < int(self.fine_tune_start_epoch.numpy()) else "fine_tune"

    @property
    def total_epochs(self):
        """The run's length: --epochs, or stage 1 (as long as it lasted) plus --fine_tune_epochs."""
        if not self.config.fine_tune.enabled:
            return self.config.epochs
        return int(self.fine_tune_start_epoch.numpy()) + self.config.fine_tune.fine_tune_epochs

    def stage_start_epoch(self):
        """The first epoch (0-based) of the current stage."""
        return int(self.fine_tune_start_epoch.numpy()) if self.stage == "fine_tune" else 0

    def end_stage_early(self):
        """Early stopping ends the current stage: stage 1 gives way to stage 2 from the current
        epoch on (returns True: train on); any other stage ends the run (returns False)."""
        if self.stage != "heads":
            return False
        self.fine_tune_start_epoch.assign(self.epoch)
        self._enter_due_stage()
        return True

    def _enter_due_stage(self):
        """Enters the stage of the current epoch if the trainer is not in it yet."""
        stage = self.stage_for_epoch(int(self.epoch.numpy()))
        if stage != self.stage:
            self._enter_stage(stage)

    def _enter_stage(self, stage):
        """Sets trainable layers and a fresh optimizer and schedule for a stage, then retraces."""
        config, fine_tune = self.config, self.config.fine_tune
        if stage == "train":
            model_lib.unfreeze_all(self.model)
        elif stage == "heads":
            model_lib.set_trainable(self.model, unfreeze_from=None)
        else:
            prefix = fine_tune.unfreeze_from
            if prefix is None:
                prefix = model_lib.DEFAULT_UNFREEZE_FROM[config.model.backbone]
            model_lib.set_trainable(self.model, unfreeze_from=prefix)
        lr, stage_epochs = stage_lr_and_epochs(config, stage)
        schedule_params, _ = stage_schedule_params(config, stage, self.steps_per_epoch)
        with self.strategy.scope():
            self.optimizer = _make_optimizer(config.optimizer, lr, config.momentum, self.policy)
            self.optimizer.build(self.model.trainable_variables)
            self.schedule = schedules.make_schedule(
                config.schedule, lr=lr, steps_per_epoch=self.steps_per_epoch,
                total_steps=stage_epochs * self.steps_per_epoch, **schedule_params)
            self.stage_start_step = tf.Variable(
                self.global_step.read_value(), trainable=False, dtype=tf.int64,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, name="stage_start_step")
            self.non_finite = tf.Variable(False, trainable=False,
                                          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.checkpoint = tf.train.Checkpoint(**self._checkpoint_objects())
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.checkpoint_dir,
                                                  max_to_keep=self.config.keep_checkpoints)
        self._train_loop = self._make_train_loop()
        self._eval_step = self._make_eval_step()
        self.stage = stage
        if stage == "fine_tune":
            self._log(describe_fine_tune_stage(config, self.schedule))

    def _checkpoint_objects(self):
        return dict(model=self.model, optimizer=self.optimizer, schedule=self.schedule,
                    epoch=self.epoch, step_in_epoch=self.step_in_epoch,
                    global_step=self.global_step, stage_start_step=self.stage_start_step,
                    **{_FINE_TUNE_START: self.fine_tune_start_epoch})

    def _restoring_checkpoint(self, saved):
        """The checkpoint to restore with: without what a checkpoint made before it existed lacks."""
        if _FINE_TUNE_START in saved:
            return self.checkpoint
        objects = self._checkpoint_objects()
        del objects[_FINE_TUNE_START]
        return tf.train.Checkpoint(**objects)

    # -- compiled steps -----------------------------------------------------------------

    def _forward_backward(self, images, batch_labels):
        config = self.config
        with tf.GradientTape() as tape:
            outputs = self.model(images, training=True)
            per_head = heads.per_example_losses(batch_labels, outputs, config.regression_loss)
            per_example = heads.total_loss(per_head, config.loss_weights)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=config.batch_size)
            scaled = (self.optimizer.scale_loss(loss)
                      if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer) else loss)
        grads = tape.gradient(scaled, self.model.trainable_variables)
        return loss, outputs, per_head, grads

    def _make_train_loop(self):
        strategy, model, optimizer = self.strategy, self.model, self.optimizer
        forward_backward = (tf.function(self._forward_backward, jit_compile=True)
                            if self.config.jit_compile else self._forward_backward)

        input_config = self.config.input
        seed = 0 if input_config.seed is None else input_config.seed

        def replica_step(images, batch_labels, step):
            # A seed per global step and replica: a resumed run crops as the first run did.
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            step_seed = tf.stack([tf.constant(seed, tf.int64),
                                  step * strategy.num_replicas_in_sync + tf.cast(replica, tf.int64)])
            images = augment.augment_batch(images, input_config.img_dim, input_config.augment,
                                           step_seed)
            loss, outputs, per_head, grads = forward_backward(images, batch_labels)
            optimizer.apply(grads, model.trainable_variables)
            self.train_metrics.update(batch_labels, outputs, per_head, self.config.loss_weights)
            return loss

        @tf.function
        def train_loop(iterator, num_steps):
            loss = tf.constant(0.0)
            for _ in tf.range(num_steps):
                stage_step = self.global_step - self.stage_start_step
                optimizer.learning_rate.assign(self.schedule.learning_rate(stage_step))
                images, batch_labels = next(iterator)
                per_replica = strategy.run(replica_step,
                                           args=(images, batch_labels, self.global_step.value()))
                loss = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
                self.global_step.assign_add(1)
                self.step_in_epoch.assign_add(1)
                if not tf.math.is_finite(loss):
                    self.non_finite.assign(True)
                    break
            return loss

        return train_loop

    def _make_eval_step(self):
        def replica_step(images, batch_labels):
            outputs = self.model(images, training=False)
            per_head = heads.per_example_losses(batch_labels, outputs, self.config.regression_loss)
            self.val_metrics.update(batch_labels, outputs, per_head, self.config.loss_weights)

        @tf.function
        def eval_step(batch):
            self.strategy.run(replica_step, args=batch)

        return eval_step

    # -- public -------------------------------------------------------------------------

    def evaluate(self, split="validation"):
        """Runs the eval metrics over one pass of `split`; returns {val_name: value}."""
        self.val_metrics.reset()
        data = self.strategy.distribute_datasets_from_function(
            lambda ctx: self._dataset(split, ctx, training=False))
        for i, batch in enumerate(data):
            if self.config.validation_steps and i >= self.config.validation_steps:
                break
            self._eval_step(batch)
        return self.val_metrics.results()

    def train_steps(self, iterator, num_steps):
        """Runs `num_steps` training steps; returns the last global-batch loss (python float)."""
        loss = float(self._train_loop(iterator, tf.constant(num_steps, tf.int64)))
        if bool(self.non_finite.numpy()):
            raise NonFiniteLossError(
                f"non-finite loss ({loss}) at epoch {int(self.epoch.numpy()) + 1}, step "
                f"{int(self.step_in_epoch.numpy())}; stopped. {self._what_is_kept()}; lower --lr "
                "or check the data")
        return loss

    def _what_is_kept(self):
        """What a stop leaves untouched to resume from or use, for its message."""
        latest = tf.train.latest_checkpoint(self.restore_dir)
        best = os.path.exists(os.path.join(self.config.model_dir, "best.keras"))
        if latest and best:
            return f"The last good checkpoint, {latest}, and best.keras are intact"
        if latest:
            return f"The last good checkpoint, {latest}, is intact"
        return "The run's best.keras is intact" if best else "Nothing was saved yet"

    def use_schedule(self, schedule):
        """Replaces the stage's schedule (counting from the current step) and retraces the loop."""
        self.schedule = schedule
        self.stage_start_step.assign(self.global_step)
        self._train_loop = self._make_train_loop()

    def learning_rate(self):
        return float(self.schedule.learning_rate(self.global_step - self.stage_start_step))

    def average_moving_statistics(self):
        """Under multi-worker, sets BatchNorm moving statistics to their mean over workers.

        Each worker updates them from its own batches only, so without this the workers'
        models (and the chief's saved one) drift apart in these variables.
        """
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return
        variables = [v for v in self.model.non_trainable_variables
                     if tf.as_dtype(v.dtype).is_floating]
        if not variables:
            return
        flat = tf.concat([tf.reshape(tf.cast(v.value, tf.float32), [-1]) for v in variables], 0)
        mean = self.strategy.reduce(
            tf.distribute.ReduceOp.MEAN,
            self.strategy.experimental_distribute_values_from_function(lambda _: tf.identity(flat)),
            axis=None)
        offset = 0
        for v in variables:
            size = int(np.prod(v.shape))
            v.assign(tf.cast(tf.reshape(mean[offset:offset + size], v.shape), v.dtype))
            offset += size

    def save_checkpoint(self):
        """Saves on every worker (the save is collective); only the chief's lands in model_dir.

        A full disk is a one-line run_files.DiskFullError naming the folder, not TensorFlow's
        traceback (ENOSPC and EDQUOT reach Python as ResourceExhaustedError).
        """
        try:
            return self.manager.save(checkpoint_number=self.global_step)
        except (tf.errors.ResourceExhaustedError, OSError) as error:
            if isinstance(error, OSError) and not run_files.is_disk_full(error):
                raise
            raise run_files.disk_full_error(
                self.checkpoint_dir, f"checkpoint ckpt-{int(self.global_step.numpy())}",
                detail=one_line(error)) from error

    def fit(self):
        """Trains from the current state to `total_epochs`; returns the history dict.

        On SIGTERM it saves a checkpoint between host calls and raises `termination.Preempted`.
        """
        with termination.TerminationWatcher(self.strategy) as watcher:
            try:
                return self._fit(watcher)
            finally:
                self.profiler.stop()  # a profile of fewer steps when the run ends inside it

    def _stop_for_termination(self, save):
        if save:
            self.save_checkpoint()
        raise termination.Preempted(
            f"terminated (SIGTERM) at epoch {int(self.epoch.numpy()) + 1}, step "
            f"{int(self.step_in_epoch.numpy())}; checkpoint saved in {self.restore_dir}; "
            "rerun the same command to resume")

    def _fit(self, watcher):
        config = self.config
        for warning in self.schedule_warnings:
            self._warn(warning)
        monitor = callbacks.RunMonitor(self)
        iterator = iter(self.train_data)
        while int(self.epoch.numpy()) < self.total_epochs:
            epoch = int(self.epoch.numpy())
            self._enter_due_stage()
            # A rerun of a run that early stopping ended stays stopped (the history says so).
            stopped = monitor.early_stop_reason()
            if stopped and self.stage == "heads":
                self._log(f"{stopped}: stage heads ends after epoch {epoch}")
                self.end_stage_early()
                continue
            if stopped:
                self._log(f"Nothing to train: early stopping ended this run after epoch {epoch}: "
                          f"{stopped.removeprefix('Early stopping: ')}. To train on, rerun with "
                          "a larger --early_stopping_patience, or 0")
                break
            monitor.epoch_begin(epoch)
            self.train_metrics.reset()
            while int(self.step_in_epoch.numpy()) < self.steps_per_epoch:
                done = int(self.step_in_epoch.numpy())
                n = min(config.steps_per_loop, self.steps_per_epoch - done)
                if config.checkpoint_every_steps:
                    n = min(n, config.checkpoint_every_steps
                            - int(self.global_step.numpy()) % config.checkpoint_every_steps)
                step = int(self.global_step.numpy())
                n = self.profiler.steps_before_boundary(step, n)
                self.profiler.before_steps(step)
                start = time.perf_counter()
                with self.profiler.trace(step):
                    loss = self.train_steps(iterator, n)
                monitor.steps_end(n, loss, time.perf_counter() - start)
                self.profiler.after_steps(int(self.global_step.numpy()))
                if config.checkpoint_every_steps and int(self.global_step.numpy()) % config.checkpoint_every_steps == 0:
                    self.save_checkpoint()
                if watcher.requested():
                    self._stop_for_termination(save=True)
            train_results = self.train_metrics.results()
            self.average_moving_statistics()
            val_results = self.evaluate("validation")
            self.epoch.assign_add(1)
            self.step_in_epoch.assign(0)
            stop = monitor.epoch_end(epoch, train_results, val_results)
            # An early stop in stage 1 starts stage 2 now; in the last stage it ends the run.
            run_ends = stop and not self.end_stage_early()
            # Before the save, so a run killed at the switch resumes with stage 2's optimizer.
            self._enter_due_stage()
            self.save_checkpoint()
            # After the checkpoint: a failed save leaves no best.keras of an unsaved epoch.
            monitor.epoch_saved()
            if watcher.requested():
                self._stop_for_termination(save=False)
            if run_ends:
                break
        monitor.train_end()
        return monitor.history


def write_run_definition(model_dir, model_config):
    """Records the run-defining settings, checked by every later resume."""
    run_files.write_json(os.path.join(model_dir, "run.json"), run_definition(model_config))


def config_to_json(config):
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
