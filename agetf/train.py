"""Train, evaluate and export a face age/gender model.

    python -m agetf.train --flagfile flags/demo.flags
    python -m agetf.train --flagfile flags/demo.flags --load          # evaluate the trained model

Flags are defined here only and become plain dataclasses once; rerunning the same
command resumes from the latest checkpoint in --model_dir.
"""

import json
import os
import sys

from absl import app, flags, logging

from agetf.modeling import heads as heads_lib  # no TensorFlow: the flags are checked before it starts

FLAGS = flags.FLAGS

# The older project's flags, same names and meaning.
flags.DEFINE_enum("type", "classification", ["classification", "regression"],
                  "classification: age histogram (or ranges with --range_mode); regression: age/100.")
flags.DEFINE_boolean("range_mode", False, "With --type=classification: 17 age ranges instead of the histogram.")
flags.DEFINE_boolean("predict_gender", False, "Add the gender head.")
flags.DEFINE_list("heads", [], "Explicit heads (age_histogram, age_range, age, gender); "
                  "overrides --type/--range_mode/--predict_gender.")
flags.DEFINE_string("base_model", "MobileNetV2", "Backbone: MobileNetV2 or ResNet50.")
flags.DEFINE_integer("img_dim", 128, "Square input size in pixels.")
flags.DEFINE_integer("batch_size", 32, "Global batch size (over all replicas and workers).")
flags.DEFINE_string("lr_scheduler", "constant",
                    "constant, reduce_lr_on_plateau, cyclic_lr or cosine.")
flags.DEFINE_float("age_deviation", None, "Sigma in years of the age histogram; default: the "
                   "one the records were converted with.")
flags.DEFINE_boolean("load", False, "Evaluate the trained model in --model_dir on the test split "
                     "instead of training (with --export_dir: export it too).")
flags.DEFINE_boolean("fine_tuning", False, "Two stages: heads on a frozen backbone, then the top "
                     "of the backbone unfrozen.")
flags.DEFINE_boolean("lr_find", False, "Run the LR range test, write plots/lr_find.png and "
                     "lr_find.json, and stop.")

# Data and output.
flags.DEFINE_string("data_dir", None, "Converted dataset (scripts/make_tfrecords output).")
flags.DEFINE_string("model_dir", None, "Everything a run writes: checkpoints, logs, models, plots.")
flags.DEFINE_string("export_dir", None, "SavedModel destination; default MODEL_DIR/saved_model.")
flags.DEFINE_boolean("export", True, "Export a SavedModel after training.")
flags.DEFINE_boolean("export_tflite", False, "Also write TFLite models (float32, float16, dynamic "
                     "int8; uint8 image in) to MODEL_DIR/tflite after the SavedModel export.")
flags.DEFINE_enum("eval_split", "test", ["test", "validation"],
                  "Split that --load and the end of training evaluate; validation writes "
                  "evaluation_validation.json, so settings can be chosen without looking at test.")
flags.DEFINE_enum("eval_protocol", "random", ["random", "ages_21_60"],
                  "Test images to evaluate: random (the whole test split) or ages_21_60 (the "
                  "ordinal-regression papers' UTKFace protocol).")
flags.DEFINE_boolean("test_time_flip", False, "Evaluate and export the mean of each face's and its "
                     "mirror image's outputs (test-time flip; twice the inference cost).")
flags.DEFINE_integer("print_predictions", 10, "Per-image lines to print when evaluating.")
flags.DEFINE_boolean("cache", False, "Cache decoded images in memory (when the set fits).")
flags.DEFINE_integer("shuffle_buffer", 2048, "Record shuffle buffer.")
flags.DEFINE_boolean("augment", True, "Augment training images (flip, crop, colour, blur).")
flags.DEFINE_boolean("skip_corrupt_records", False, "Skip unreadable records instead of stopping.")
flags.DEFINE_integer("seed", None, "Seed for shuffling and augmentation.")
flags.DEFINE_string("tf_data_service", None, "grpc://HOST:PORT of a tf.data service dispatcher "
                    "(python -m agetf.data_service) that runs training input preprocessing.")

# Model.
flags.DEFINE_string("weights", "imagenet", "Backbone weights: imagenet (as keras.applications; "
                    "downloaded once into the Keras cache), none (random), or a .h5 file path.")
flags.DEFINE_float("alpha", 1.0, "MobileNetV2 width multiplier.")
flags.DEFINE_float("dropout", 0.2, "Dropout before the heads.")
flags.DEFINE_float("batchnorm_momentum", None, "Override the backbone's BatchNorm momentum "
                   "(e.g. 0.9 for short runs from scratch); default: Keras'.")
flags.DEFINE_list("loss_weights", [], "Per-head loss weights, e.g. age_histogram=1,gender=0.5.")
flags.DEFINE_enum("regression_loss", "mse", ["mse", "huber"], "Loss of the regression head.")

# Optimization.
flags.DEFINE_integer("epochs", 30, "Epochs (without --fine_tuning).")
flags.DEFINE_string("lr", "1e-3", "Learning rate, or 'auto' to run the LR finder first and use its suggestion.")
flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "Optimizer.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_string("best_metric", "val_loss", "Validation metric that picks best.keras.")
flags.DEFINE_integer("early_stopping_patience", 0, "Stop after this many epochs without "
                     "improvement of --best_metric; 0 = off.")
flags.DEFINE_string("plateau_monitor", "val_loss", "ReduceLROnPlateau: monitored metric.")
flags.DEFINE_enum("plateau_mode", "auto", ["auto", "min", "max"], "ReduceLROnPlateau: whether "
                  "the monitored metric should fall or rise; auto: rise for accuracies and CS@5.")
flags.DEFINE_float("plateau_factor", 0.2, "ReduceLROnPlateau: factor.")
flags.DEFINE_integer("plateau_patience", 3, "ReduceLROnPlateau: patience in epochs.")
flags.DEFINE_integer("plateau_cooldown", 0, "ReduceLROnPlateau: cooldown in epochs.")
flags.DEFINE_float("plateau_min_lr", 1e-6, "ReduceLROnPlateau: lower bound.")
flags.DEFINE_float("clr_base_lr", 1e-4, "CyclicLR: lower bound.")
flags.DEFINE_float("clr_max_lr", 1e-1, "CyclicLR: upper bound.")
flags.DEFINE_enum("clr_mode", "triangular", ["triangular", "triangular2", "exp_range"], "CyclicLR mode.")
flags.DEFINE_float("clr_gamma", 1.0, "CyclicLR exp_range gamma.")
flags.DEFINE_float("clr_half_cycle_epochs", 8, "CyclicLR: half cycle in epochs.")
flags.DEFINE_integer("clr_half_cycle_steps", 0, "CyclicLR: half cycle in steps (overrides epochs).")
flags.DEFINE_float("warmup_epochs", 0, "Cosine: linear warm-up epochs.")
flags.DEFINE_float("cosine_min_lr", 0.0, "Cosine: final learning rate.")
flags.DEFINE_float("lr_find_min", 1e-10, "LR finder: first learning rate.")
flags.DEFINE_float("lr_find_max", 10.0, "LR finder: last learning rate.")
flags.DEFINE_float("lr_find_epochs", 3, "LR finder: length in epochs.")
flags.DEFINE_integer("lr_find_steps", 0, "LR finder: length in steps (overrides epochs).")
flags.DEFINE_integer("head_epochs", 10, "Fine-tuning stage 1: epochs on a frozen backbone.")
flags.DEFINE_integer("fine_tune_epochs", 35, "Fine-tuning stage 2: epochs with the top unfrozen.")
flags.DEFINE_float("fine_tune_lr", 1e-4, "Fine-tuning stage 2 learning rate.")
flags.DEFINE_string("unfreeze_from", None, "Fine-tuning: first backbone layer name prefix to "
                    "unfreeze; default block_16_ (MobileNetV2) or conv5_ (ResNet50).")

# Execution.
flags.DEFINE_string("strategy", "auto", "auto, default, mirrored, multi_worker_mirrored or tpu.")
flags.DEFINE_string("tpu", "", "TPU address for --strategy=tpu.")
flags.DEFINE_float("collective_timeout", 600, "Multi-worker: seconds a collective may wait for "
                   "another worker before the run stops with an error (a worker alive but "
                   "stuck); 0 = wait for ever. A dead worker is noticed within seconds anyway.")
flags.DEFINE_float("worker_startup_timeout", 300, "Multi-worker: seconds to wait at start-up for "
                   "every worker of TF_CONFIG to join before the run stops with an error naming "
                   "the missing ones (a pod never scheduled); 0 = wait for ever.")
flags.DEFINE_string("mixed_precision", "auto", "auto, float32, mixed_float16 or mixed_bfloat16.")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the forward and backward pass.")
flags.DEFINE_integer("steps_per_loop", 10, "Training steps per host call.")
flags.DEFINE_integer("steps_per_epoch", 0, "0: one pass over the training split.")
flags.DEFINE_integer("validation_steps", 0, "0: the whole validation split.")
flags.DEFINE_integer("checkpoint_every_steps", 0, "Also checkpoint every N steps; 0: epoch ends only.")
flags.DEFINE_integer("summary_images", 8, "Validation faces in the TensorBoard grid; 0 = none.")
flags.DEFINE_list("profile_steps", None, "START,END: write a TensorBoard profile of training "
                  "steps START to END-1 (global, from 0) to MODEL_DIR/logs/plugins/profile, "
                  "e.g. 10,20 (after the first steps' tracing).")

flags.mark_flags_as_required(["data_dir", "model_dir"])


class UsageError(ValueError):
    """A flag value that cannot work; the message names the flag and the fix."""


def parse_loss_weights(items):
    weights = {}
    for item in items:
        head, sep, value = item.partition("=")
        try:
            weights[head.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise UsageError(f"--loss_weights item {item!r} is not HEAD=NUMBER, e.g. gender=0.5")
    return weights


def resolve_heads():
    """The heads the flags ask for, in HEADS order: the order never defines a model."""
    if FLAGS.heads:
        heads_lib.validate_heads(FLAGS.heads)
        return heads_lib.in_canonical_order(FLAGS.heads)
    return heads_lib.select_heads(FLAGS.type, FLAGS.range_mode, FLAGS.predict_gender)


# Counts and lengths: the least value that means anything, and what that value means.
_MINIMUMS = (
    ("batch_size", 1, ""), ("epochs", 1, ""), ("steps_per_loop", 1, ""),
    ("shuffle_buffer", 1, " (1: no shuffling)"),
    ("head_epochs", 0, ""), ("fine_tune_epochs", 0, ""),
    ("steps_per_epoch", 0, " (0: one pass over the training split)"),
    ("validation_steps", 0, " (0: the whole validation split)"),
    ("checkpoint_every_steps", 0, " (0: at epoch ends only)"),
    ("summary_images", 0, " (0: none)"), ("print_predictions", 0, " (0: none)"),
    ("early_stopping_patience", 0, " (0: off)"),
    ("plateau_patience", 0, " epochs"), ("plateau_cooldown", 0, " epochs"),
    ("plateau_min_lr", 0, ""), ("clr_half_cycle_steps", 0, " (0: use --clr_half_cycle_epochs)"),
    ("warmup_epochs", 0, ""), ("cosine_min_lr", 0, ""),
    ("collective_timeout", 0, " seconds (0 waits for ever)"),
    ("worker_startup_timeout", 0, " seconds (0 waits for ever)"),
)
# Rates and lengths that must be above zero (None, where a flag allows it, is not checked).
_POSITIVE = ("alpha", "fine_tune_lr", "clr_base_lr", "clr_half_cycle_epochs", "lr_find_min",
             "lr_find_epochs", "age_deviation")
# Fractions: (flag, lowest, highest, whether each end is allowed, an example).
_INTERVALS = (
    ("dropout", 0.0, 1.0, (True, False), "0.2"),
    ("batchnorm_momentum", 0.0, 1.0, (False, False), "0.9"),
    ("momentum", 0.0, 1.0, (True, False), "0.9"),
    ("plateau_factor", 0.0, 1.0, (False, False), "0.2"),
    ("clr_gamma", 0.0, 1.0, (False, True), "0.99"),
)


def _shown(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_flag_ranges():
    """Refuses a number outside the range where it means anything; UsageError naming the fix."""
    for name, minimum, meaning in _MINIMUMS:
        value = FLAGS[name].value
        if not value >= minimum:  # `not >=`: NaN fails too
            raise UsageError(f"--{name}={_shown(value)} must be >= {minimum}{meaning}")
    for name in _POSITIVE:
        value = FLAGS[name].value
        if value is not None and not value > 0:
            raise UsageError(f"--{name}={_shown(value)} must be > 0")
    for name, low, high, (low_ok, high_ok), example in _INTERVALS:
        value = FLAGS[name].value
        if value is None:
            continue
        above = low <= value if low_ok else low < value
        below = value <= high if high_ok else value < high
        if not (above and below):
            interval = f"{'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"
            raise UsageError(f"--{name}={_shown(value)} must be in {interval}, "
                             f"e.g. --{name}={example}")
    if FLAGS.fine_tuning and FLAGS.head_epochs + FLAGS.fine_tune_epochs < 1:
        raise UsageError("--head_epochs=0 and --fine_tune_epochs=0 train nothing; give one of "
                         "them 1 or more, or drop --fine_tuning")
    if FLAGS.lr_find_steps != 0 and FLAGS.lr_find_steps < 2:
        raise UsageError(f"--lr_find_steps={FLAGS.lr_find_steps} must be 0 (use --lr_find_epochs) "
                         "or >= 2")
    if not FLAGS.lr_find_max > FLAGS.lr_find_min:
        raise UsageError(f"--lr_find_max={FLAGS.lr_find_max:g} must be above "
                         f"--lr_find_min={FLAGS.lr_find_min:g}")
    if not FLAGS.clr_max_lr >= FLAGS.clr_base_lr:
        raise UsageError(f"--clr_max_lr={FLAGS.clr_max_lr:g} must be >= "
                         f"--clr_base_lr={FLAGS.clr_base_lr:g}")


def parse_profile_steps(items):
    """--profile_steps as (START, END), or None when not given; UsageError unless two whole
    numbers with 0 <= START < END."""
    if not items:
        return None
    try:
        start, end = (int(item) for item in items)
    except ValueError:
        start = end = None
    if start is None or not 0 <= start < end:
        raise UsageError(f"--profile_steps={','.join(items)} must be START,END: two whole numbers "
                         "with 0 <= START < END, e.g. --profile_steps=10,20")
    return start, end


def check_flags():
    """Checks every flag that needs no TensorFlow, so a bad one costs no TensorFlow start-up."""
    check_flag_ranges()
    if FLAGS.lr != "auto":
        try:
            lr = float(FLAGS.lr)
        except ValueError:
            raise UsageError(f"--lr={FLAGS.lr} is neither a number nor 'auto'") from None
        if not lr > 0:
            raise UsageError(f"--lr={FLAGS.lr} must be > 0, or 'auto'")
    if FLAGS.tpu and FLAGS.strategy != "tpu":
        raise UsageError(f"--tpu={FLAGS.tpu} applies to --strategy=tpu only; add --strategy=tpu "
                         "or drop --tpu")
    heads = resolve_heads()
    not_heads = [head for head in parse_loss_weights(FLAGS.loss_weights)
                 if head not in heads_lib.HEADS]
    if not_heads:
        raise UsageError(f"--loss_weights names {', '.join(not_heads)}, which is no head; use "
                         f"one of {', '.join(heads_lib.HEADS)}")
    parse_profile_steps(FLAGS.profile_steps)
    allowed = ["val_" + name for name in heads_lib.metric_names(heads)]
    if FLAGS.best_metric not in allowed:
        raise UsageError(f"--best_metric={FLAGS.best_metric} is not reported for these heads; "
                         f"use one of {', '.join(allowed)}")


def trained_loss_weights(heads):
    """--loss_weights of the heads this run trains. An entry for another head (a flagfile's
    age_histogram=5 under --type=regression) is skipped with one warning line naming it."""
    weights = parse_loss_weights(FLAGS.loss_weights)
    skipped = [f"{head}={value:g}" for head, value in weights.items() if head not in heads]
    if skipped:
        logging.warning("--loss_weights: skipping %s, for heads this run does not train (it "
                        "trains %s)", ", ".join(skipped), ", ".join(heads))
    return {head: value for head, value in weights.items() if head in heads}


def build_config():
    """Validates the flags and turns them into a TrainConfig; raises UsageError/ValueError."""
    check_flags()
    from agetf.data import augment, input_pipeline
    from agetf.modeling import model as model_lib
    from agetf.training import distribution, schedules, trainer

    heads = resolve_heads()
    if FLAGS.base_model not in model_lib.BACKBONES:
        raise UsageError(f"--base_model={FLAGS.base_model} is unknown; use one of "
                         f"{', '.join(model_lib.BACKBONES)}")
    minimum = model_lib.min_img_dim(FLAGS.base_model)
    if FLAGS.img_dim < minimum:
        raise UsageError(f"--img_dim={FLAGS.img_dim} is below {FLAGS.base_model}'s minimum of "
                         f"{minimum}; use --img_dim={minimum} or more")
    if FLAGS.lr_scheduler not in schedules.SCHEDULES:
        raise UsageError(f"--lr_scheduler={FLAGS.lr_scheduler} is unknown; use one of "
                         f"{', '.join(schedules.SCHEDULES)}")
    distribution.resolve_strategy_name(FLAGS.strategy)  # checks the value
    if FLAGS.mixed_precision not in distribution.MIXED_PRECISION:
        raise UsageError(f"--mixed_precision={FLAGS.mixed_precision} is unknown; use one of "
                         f"{', '.join(distribution.MIXED_PRECISION)}")
    for split in ("train", "validation", "test"):
        input_pipeline.list_shards(FLAGS.data_dir, split)  # one-line error if missing or empty

    input_config = input_pipeline.InputConfig(
        data_dir=FLAGS.data_dir, img_dim=FLAGS.img_dim, shuffle_buffer=FLAGS.shuffle_buffer,
        cache=FLAGS.cache, age_deviation=FLAGS.age_deviation,
        skip_corrupt_records=FLAGS.skip_corrupt_records, seed=FLAGS.seed,
        data_service=FLAGS.tf_data_service,
        augment=augment.AugmentConfig() if FLAGS.augment else augment.NO_AUGMENTATION)
    schedule_params = {name: FLAGS[name].value for name in (
        "plateau_monitor", "plateau_mode", "plateau_factor", "plateau_patience",
        "plateau_cooldown", "plateau_min_lr", "clr_base_lr", "clr_max_lr", "clr_mode", "clr_gamma",
        "clr_half_cycle_epochs", "clr_half_cycle_steps", "warmup_epochs", "cosine_min_lr")}
    return trainer.TrainConfig(
        model_dir=FLAGS.model_dir, input=input_config,
        model=trainer.ModelConfig(backbone=FLAGS.base_model, img_dim=FLAGS.img_dim, heads=heads,
                                  alpha=FLAGS.alpha, weights=FLAGS.weights, dropout=FLAGS.dropout,
                                  batchnorm_momentum=FLAGS.batchnorm_momentum),
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        lr=float(FLAGS.lr) if FLAGS.lr != "auto" else 1e-3, optimizer=FLAGS.optimizer,
        momentum=FLAGS.momentum, loss_weights=trained_loss_weights(heads),
        regression_loss=FLAGS.regression_loss, schedule=FLAGS.lr_scheduler,
        schedule_params=schedule_params,
        fine_tune=trainer.FineTuneConfig(enabled=FLAGS.fine_tuning, head_epochs=FLAGS.head_epochs,
                                         fine_tune_epochs=FLAGS.fine_tune_epochs,
                                         fine_tune_lr=FLAGS.fine_tune_lr,
                                         unfreeze_from=FLAGS.unfreeze_from),
        strategy=FLAGS.strategy, mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile, steps_per_loop=FLAGS.steps_per_loop,
        steps_per_epoch=FLAGS.steps_per_epoch, validation_steps=FLAGS.validation_steps,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps, best_metric=FLAGS.best_metric,
        early_stopping_patience=FLAGS.early_stopping_patience,
        summary_images=FLAGS.summary_images,
        profile_steps=parse_profile_steps(FLAGS.profile_steps))


def skipped_test_records(input_config, split="test"):
    """With --skip_corrupt_records: logs how many records of the split are unreadable; else None."""
    if not input_config.skip_corrupt_records:
        return None
    from agetf.data import record_audit

    audit = record_audit.audit_split(input_config.data_dir, split)
    if audit.lost:
        logging.warning(audit.describe())
    else:
        print(audit.describe())
    return audit


def evaluate_and_export(config, export):
    """Evaluates the trained model on --eval_split; writes its report (evaluation.json for test);
    exports it."""
    from agetf.evaluation import evaluator
    from agetf.serving import export as export_lib
    from agetf.training import run_files

    # best.keras, else final.keras: a damaged one is skipped with a warning line.
    model = run_files.load_trained_model(config.model_dir)
    audit = skipped_test_records(config.input, FLAGS.eval_split)
    report, lines = evaluator.evaluate(model, config.input, FLAGS.eval_split, batch_size=64,
                                        print_predictions=FLAGS.print_predictions,
                                        protocol=FLAGS.eval_protocol,
                                        flip_average=FLAGS.test_time_flip)
    if audit is not None:
        report["skipped_records"] = audit.skipped
    for line in lines:
        print(line)
    print(evaluator.format_report(report))
    report_name = ("evaluation.json" if FLAGS.eval_split == "test"
                   else f"evaluation_{FLAGS.eval_split}.json")
    run_files.write_json(os.path.join(config.model_dir, report_name), report)
    if export:
        export_dir = FLAGS.export_dir or os.path.join(config.model_dir, "saved_model")
        export_lib.export_saved_model(model, export_dir, img_dim=config.model.img_dim,
                                      flip_average=FLAGS.test_time_flip)
        print(f"Exported SavedModel to {export_dir}")
    if FLAGS.export_tflite:
        from agetf.serving import tflite_export

        paths = tflite_export.export_tflite(model, os.path.join(config.model_dir, "tflite"),
                                            img_dim=config.model.img_dim,
                                            flip_average=FLAGS.test_time_flip)
        print(f"Exported TFLite models to {os.path.dirname(paths['float32'])}")
    return report


def ensure_writable_dir(path):
    """Creates `path` if needed; a UsageError when it cannot be created or written."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--model_dir={path} cannot be created ({error.strerror}); "
                         "choose a folder you can write") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--model_dir={path} is not writable; choose a folder you can write")


def lock_model_dir(model_dir, purpose, strategy=None):
    """Takes --model_dir's run lock for this process (run_lock.RunLockedError if another live
    process holds it), or None where this process does not write model_dir: a non-chief worker
    under MultiWorkerMirroredStrategy (it writes to a temporary folder), or --load on a
    model_dir that does not exist (the evaluation then says there is nothing to evaluate).

    --load takes the same exclusive lock as training: it writes evaluation.json (and with
    --export_tflite, tflite/) into model_dir, and a running training replaces best.keras under
    it, so it is refused while a training runs, and a training while it evaluates.
    """
    from agetf.common import run_lock
    from agetf.training import distribution

    if strategy is not None and not distribution.is_chief(strategy):
        return None
    if purpose != "training" and not os.path.isdir(model_dir):
        return None
    try:
        return run_lock.acquire(model_dir, purpose)
    except OSError as error:  # a read-only model_dir: the lock file cannot be created
        if purpose == "training":
            raise UsageError(f"--model_dir={model_dir}: cannot create its lock file "
                             f"{run_lock.LOCK_FILE} ({error.strerror}); choose a folder you can "
                             "write") from None
        return None  # evaluating a run nobody can write to: no training can start there either


def train(config):
    import dataclasses

    import tensorflow as tf

    from agetf.training import distribution, lr_finder, run_files, trainer as trainer_lib

    ensure_writable_dir(config.model_dir)
    logging.info("Configuration: %s", json.dumps(trainer_lib.config_to_json(config)))
    trainer_lib.check_run_definition(config.model_dir, config.model)
    # --lr=auto on a resume: the finder ran when the run began; rerunning it on the trained
    # weights would change the learning rate mid-run (and cost its steps on every rerun).
    resume_auto = bool(FLAGS.lr == "auto" and not FLAGS.lr_find and tf.train.latest_checkpoint(
        os.path.join(config.model_dir, "checkpoints")))
    if resume_auto:
        found = os.path.join(config.model_dir, "lr_find.json")
        suggestion = lr_finder.saved_suggestion(config.model_dir)
        if suggestion is None:
            raise UsageError(f"--lr=auto: {config.model_dir} holds a checkpoint to resume but "
                             f"{found} is missing or unreadable, so the learning rate the run began "
                             "with is unknown; resume with --lr=NUMBER, or use a new --model_dir")
        config = dataclasses.replace(config, lr=suggestion)
        print(f"Resuming with the learning rate the LR finder suggested when this run began, "
              f"{suggestion:.3g} (from {found}); the finder is not rerun")
    strategy = distribution.make_strategy(config.strategy, tpu_address=FLAGS.tpu,
                                          collective_timeout=FLAGS.collective_timeout,
                                          startup_timeout=FLAGS.worker_startup_timeout)
    # Held until this process ends (evaluation and export included); the kernel frees it then.
    lock = lock_model_dir(config.model_dir, "training", strategy)
    if FLAGS.lr_find or (FLAGS.lr == "auto" and not resume_auto):
        suggestion = lr_finder.run_lr_finder(config, min_lr=FLAGS.lr_find_min,
                                             max_lr=FLAGS.lr_find_max, epochs=FLAGS.lr_find_epochs,
                                             steps=FLAGS.lr_find_steps, strategy=strategy)
        if FLAGS.lr_find:
            return None
        if suggestion is None:
            raise UsageError("the LR finder found no suggestion (the loss never fell); "
                             "pass --lr=NUMBER")
        config = dataclasses.replace(config, lr=suggestion)
        print(f"Training with the suggested learning rate {suggestion:.3g}")
    trainer = trainer_lib.Trainer(config, strategy=strategy)
    trainer.run_lock = lock
    if trainer.chief:
        run_files.write_text(os.path.join(config.model_dir, "flags.txt"), FLAGS.flags_into_string())
        trainer_lib.write_run_definition(config.model_dir, config.model)
    trainer.fit()
    return trainer


def configure_logging():
    """absl logging as the user asked: --verbosity when given, else warnings only (TensorFlow's
    INFO lines would bury the progress). With --log_dir, a log file there (absl writes none
    unless asked), warnings also on stderr unless --stderrthreshold says otherwise."""
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if not FLAGS.log_dir or FLAGS.logtostderr:
        return
    try:
        os.makedirs(FLAGS.log_dir, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--log_dir={FLAGS.log_dir} cannot be created ({error.strerror}); "
                         "choose a folder you can write") from None
    if not FLAGS["stderrthreshold"].present:
        FLAGS.stderrthreshold = "warning"
    logging.get_absl_handler().use_absl_log_file("agetf.train", FLAGS.log_dir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        check_flags()  # before TensorFlow starts, whose start-up lines would bury the error
        configure_logging()
    except ValueError as error:
        sys.exit(f"agetf.train: error: {error}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines
    import tensorflow as tf

    from agetf.data import input_pipeline
    from agetf.modeling import model as model_lib
    from agetf.training import (distribution, lost_workers, run_files, termination,
        trainer as trainer_lib)

    termination.exit_on_sigterm()  # SIGTERM stops the run even while TensorFlow blocks in C++

    try:
        config = build_config()
        if FLAGS.load:
            lock = lock_model_dir(config.model_dir, "evaluation (--load)")  # noqa: F841 - held
            evaluate_and_export(config, export=bool(FLAGS.export_dir))
            return 0
        trainer = train(config)
        if trainer is None or not trainer.chief:
            return 0
        evaluate_and_export(config, export=FLAGS.export)
        print(f"Run written to {config.model_dir}; watch it with: "
              f"tensorboard --logdir {os.path.join(config.model_dir, 'logs')}")
    except trainer_lib.NonFiniteLossError as error:
        sys.exit(f"agetf.train: {error}")
    except termination.Preempted as error:
        print(f"agetf.train: {error}", file=sys.stderr, flush=True)
        return termination.EXIT_CODE
    except run_files.DiskFullError as error:
        sys.exit(f"agetf.train: error: {error}")
    except tf.errors.ResourceExhaustedError as error:
        if not run_files.is_disk_full(error):
            raise
        sys.exit("agetf.train: error: " + str(run_files.disk_full_error(
            FLAGS.model_dir, detail=trainer_lib.one_line(error))))
    except tf.errors.DataLossError as error:
        # A checkpoint's read error is the checkpoint's, not the TFRecords' (the trainer checks
        # checkpoints before restoring; this catches one that reads damaged from elsewhere).
        if os.path.abspath(FLAGS.model_dir) in str(error) or "ckpt-" in str(error):
            sys.exit(f"agetf.train: error: a file in --model_dir={FLAGS.model_dir} is damaged "
                     f"({trainer_lib.one_line(error)}); delete it, or the model_dir's checkpoints "
                     "folder to start the run over")
        sys.exit(f"agetf.train: error: {input_pipeline.corrupt_data_error(FLAGS.data_dir)}")
    except (ValueError, model_lib.WeightsUnavailableError) as error:
        sys.exit(f"agetf.train: error: {error}")
    except tf.errors.OpError as error:
        multi_worker = distribution.resolve_strategy_name(FLAGS.strategy) == "multi_worker_mirrored"
        if not (multi_worker and lost_workers.is_lost_worker(error)):
            raise
        sys.exit("agetf.train: error: " + lost_workers.lost_worker_message(
            error, FLAGS.model_dir, FLAGS.collective_timeout))
    return 0


def parse_flags(argv):
    """absl's parsing, but a value it refuses (an enum, a number, a missing flag) gets one line
    like every other bad value, not absl's FATAL message and a pointer to --helpshort."""
    from agetf.common import flagfiles

    flagfiles.exit_on_bad_flagfile(argv, "agetf.train")  # else absl's help, then the error
    try:
        return FLAGS(argv)
    except flags.Error as error:
        sys.exit(f"agetf.train: error: {' '.join(str(error).split())}")


def console_main():
    """Console entry point (agetf-train), as python -m agetf.train."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    console_main()
