"""Train, evaluate and export a face age/gender model.

    python -m agetf.train --flagfile flags/demo.flags
    python -m agetf.train --flagfile flags/demo.flags --load          # evaluate the trained model

Flags are defined here only and become one agetf.config.TrainConfig, checked once
(`build_config`); agetf.training.job runs it. Rerunning the same command resumes from the
latest checkpoint in --model_dir. A UsageError is printed as one line; anything else keeps
its traceback.
"""

import os
import sys

from absl import app, flags, logging

from agetf import UsageError, config  # no TensorFlow: the flags are checked before it starts
from agetf.modeling import heads as heads_lib

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
flags.DEFINE_enum("eval_split", "test", list(config.EVAL_SPLITS),
                  "Split that --load and the end of training evaluate; validation writes "
                  "evaluation_validation.json, so settings can be chosen without looking at test.")
flags.DEFINE_enum("eval_protocol", "random", list(config.EVAL_PROTOCOLS),
                  "Test images to evaluate: random (the whole test split) or ages_21_60 (the "
                  "ordinal-regression papers' UTKFace protocol).")
flags.DEFINE_boolean("test_time_flip", False, "Evaluate and export the mean of each face's and its "
                     "mirror image's outputs (test-time flip; twice the inference cost).")
flags.DEFINE_integer("print_predictions", 10, "Per-image lines to print when evaluating.")
flags.DEFINE_boolean("cache", False, "Cache decoded images in memory (when the set fits).")
flags.DEFINE_integer("shuffle_buffer", 2048, "Record shuffle buffer.")
flags.DEFINE_boolean("augment", True, "Augment training images (flip, crop, colour, blur).")
flags.DEFINE_list("crop_scale", [str(v) for v in config.AugmentConfig.crop_scale],
                  "LOW,HIGH: area of the random training crop as a fraction of the image's; "
                  "HIGH above 1 (at most 2) zooms out: a box larger than the image shows the "
                  "face smaller inside a mirrored border, as a loosely framed face. With "
                  "--augment.")
flags.DEFINE_float("grey_probability", config.AugmentConfig.grey_probability,
                   "Fraction of training images turned grey (luminance in all three channels), "
                   "for grey photos elsewhere. With --augment.")
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
flags.DEFINE_enum("regression_loss", "mse", list(config.REGRESSION_LOSSES), "Loss of the regression head.")

# Optimization.
flags.DEFINE_integer("epochs", 30, "Epochs (without --fine_tuning).")
flags.DEFINE_string("lr", "1e-3", "Learning rate, or 'auto' to run the LR finder first and use its suggestion.")
flags.DEFINE_enum("optimizer", "adam", list(config.OPTIMIZERS), "Optimizer.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_string("best_metric", "val_loss", "Validation metric that picks best.keras.")
flags.DEFINE_integer("early_stopping_patience", 0, "Stop after this many epochs without "
                     "improvement of --best_metric; 0 = off.")
flags.DEFINE_string("plateau_monitor", "val_loss", "ReduceLROnPlateau: monitored metric.")
flags.DEFINE_enum("plateau_mode", "auto", list(config.PLATEAU_MODES), "ReduceLROnPlateau: whether "
                  "the monitored metric should fall or rise; auto: rise for accuracies and CS@5.")
flags.DEFINE_float("plateau_factor", 0.2, "ReduceLROnPlateau: factor.")
flags.DEFINE_integer("plateau_patience", 3, "ReduceLROnPlateau: patience in epochs.")
flags.DEFINE_integer("plateau_cooldown", 0, "ReduceLROnPlateau: cooldown in epochs.")
flags.DEFINE_float("plateau_min_lr", 1e-6, "ReduceLROnPlateau: lower bound.")
flags.DEFINE_float("clr_base_lr", 1e-4, "CyclicLR: lower bound.")
flags.DEFINE_float("clr_max_lr", 1e-1, "CyclicLR: upper bound.")
flags.DEFINE_enum("clr_mode", "triangular", list(config.CYCLIC_MODES), "CyclicLR mode.")
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
flags.DEFINE_enum("fine_tune_batchnorm", "frozen", config.FINE_TUNE_BATCHNORM,
                  "Fine-tuning stage 2: the unfrozen BatchNorm layers stay frozen (inference "
                  "mode, ImageNet statistics) or train (batch statistics, moving averages "
                  "updated, gamma and beta learned).")

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
    if FLAGS.heads:  # ModelConfig checks them
        return heads_lib.in_canonical_order(FLAGS.heads)
    return heads_lib.select_heads(FLAGS.type, FLAGS.range_mode, FLAGS.predict_gender)


def parse_profile_steps(items):
    """--profile_steps as (START, END), or None when not given."""
    if not items:
        return None
    try:
        start, end = (int(item) for item in items)
    except ValueError:  # not two items, or not whole numbers; RuntimeConfig checks the order
        raise UsageError(f"--profile_steps={','.join(items)} must be START,END: two whole "
                         "numbers with 0 <= START < END, e.g. --profile_steps=10,20") from None
    return start, end


def parse_lr():
    """--lr as a number, or None for 'auto'."""
    if FLAGS.lr == "auto":
        return None
    try:
        lr = float(FLAGS.lr)
    except ValueError:
        raise UsageError(f"--lr={FLAGS.lr} is neither a number nor 'auto'") from None
    if not lr > 0:
        raise UsageError(f"--lr={FLAGS.lr} must be > 0, or 'auto'")
    return lr


def trained_loss_weights(heads):
    """--loss_weights of the heads this run trains. An entry for another head (a flagfile's
    age_histogram=5 under --type=regression) is skipped with one warning line naming it; an
    entry that names no head at all is kept, for TrainConfig to refuse."""
    weights = parse_loss_weights(FLAGS.loss_weights)
    skipped = [f"{head}={value:g}" for head, value in weights.items()
               if head in heads_lib.HEADS and head not in heads]
    if skipped:
        logging.warning("--loss_weights: skipping %s, for heads this run does not train (it "
                        "trains %s)", ", ".join(skipped), ", ".join(heads))
    return {head: value for head, value in weights.items()
            if head in heads or head not in heads_lib.HEADS}


def schedule_config():
    """--lr_scheduler and its flags as the schedule's config. Every schedule's flags are
    checked, the unused ones too, so a flagfile's bad value surfaces without a schedule change."""
    name = FLAGS.lr_scheduler
    if name not in config.SCHEDULES:
        raise UsageError(f"--lr_scheduler={name} is unknown; use one of "
                         f"{', '.join(config.SCHEDULES)}")
    built = {
        config.ConstantSchedule.name: config.ConstantSchedule(),
        config.PlateauSchedule.name: config.PlateauSchedule(
            monitor=FLAGS.plateau_monitor, mode=FLAGS.plateau_mode, factor=FLAGS.plateau_factor,
            patience=FLAGS.plateau_patience, cooldown=FLAGS.plateau_cooldown,
            min_lr=FLAGS.plateau_min_lr),
        config.CyclicSchedule.name: config.CyclicSchedule(
            base_lr=FLAGS.clr_base_lr, max_lr=FLAGS.clr_max_lr, mode=FLAGS.clr_mode,
            gamma=FLAGS.clr_gamma, half_cycle_epochs=FLAGS.clr_half_cycle_epochs,
            half_cycle_steps=FLAGS.clr_half_cycle_steps),
        config.CosineSchedule.name: config.CosineSchedule(warmup_epochs=FLAGS.warmup_epochs,
                                                          min_lr=FLAGS.cosine_min_lr),
    }
    return built[name]


def augment_config():
    """--augment and its flags as the AugmentConfig. Its flags are checked with --augment off
    too, so a flagfile's bad value surfaces without turning augmentation on."""
    try:
        crop_scale = tuple(float(item) for item in FLAGS.crop_scale)
    except ValueError:
        raise UsageError(f"--crop_scale={','.join(FLAGS.crop_scale)} must be LOW,HIGH: two "
                         "numbers, e.g. --crop_scale=0.8,1.4") from None
    augment = config.AugmentConfig(crop_scale=crop_scale, grey_probability=FLAGS.grey_probability)
    return augment if FLAGS.augment else config.NO_AUGMENTATION


def build_config():
    """The flags as one TrainConfig, every value checked (no TensorFlow); raises UsageError."""
    lr = parse_lr()
    schedule = schedule_config()
    heads = resolve_heads()
    return config.TrainConfig(
        model_dir=FLAGS.model_dir,
        input=config.InputConfig(
            data_dir=FLAGS.data_dir, img_dim=FLAGS.img_dim, shuffle_buffer=FLAGS.shuffle_buffer,
            cache=FLAGS.cache, age_deviation=FLAGS.age_deviation,
            skip_corrupt_records=FLAGS.skip_corrupt_records, seed=FLAGS.seed,
            data_service=FLAGS.tf_data_service,
            augment=augment_config()),
        model=config.ModelConfig(
            backbone=FLAGS.base_model, img_dim=FLAGS.img_dim, heads=heads, alpha=FLAGS.alpha,
            weights=FLAGS.weights, dropout=FLAGS.dropout,
            batchnorm_momentum=FLAGS.batchnorm_momentum),
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, lr=1e-3 if lr is None else lr,
        optimizer=FLAGS.optimizer, momentum=FLAGS.momentum,
        loss_weights=trained_loss_weights(heads), regression_loss=FLAGS.regression_loss,
        schedule=schedule,
        fine_tune=config.FineTuneConfig(
            enabled=FLAGS.fine_tuning, head_epochs=FLAGS.head_epochs,
            fine_tune_epochs=FLAGS.fine_tune_epochs, fine_tune_lr=FLAGS.fine_tune_lr,
            unfreeze_from=FLAGS.unfreeze_from, batchnorm=FLAGS.fine_tune_batchnorm),
        lr_finder=config.LRFinderConfig(
            find_only=FLAGS.lr_find, use_suggestion=lr is None, min_lr=FLAGS.lr_find_min,
            max_lr=FLAGS.lr_find_max, epochs=FLAGS.lr_find_epochs, steps=FLAGS.lr_find_steps),
        evaluation=config.EvalConfig(
            split=FLAGS.eval_split, protocol=FLAGS.eval_protocol,
            flip_average=FLAGS.test_time_flip, print_predictions=FLAGS.print_predictions),
        export=config.ExportConfig(saved_model=FLAGS.export, export_dir=FLAGS.export_dir,
                                   tflite=FLAGS.export_tflite),
        runtime=config.RuntimeConfig(
            strategy=FLAGS.strategy, tpu=FLAGS.tpu, collective_timeout=FLAGS.collective_timeout,
            worker_startup_timeout=FLAGS.worker_startup_timeout,
            mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile,
            steps_per_loop=FLAGS.steps_per_loop,
            profile_steps=parse_profile_steps(FLAGS.profile_steps)),
        steps_per_epoch=FLAGS.steps_per_epoch, validation_steps=FLAGS.validation_steps,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps, best_metric=FLAGS.best_metric,
        early_stopping_patience=FLAGS.early_stopping_patience,
        summary_images=FLAGS.summary_images)


def check_data_dir():
    """A one-line UsageError unless --data_dir holds all three splits' shards."""
    from agetf.data import dataset_files, input_pipeline

    for split in dataset_files.SPLITS:
        input_pipeline.list_shards(FLAGS.data_dir, split)


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
        configure_logging()  # first: build_config's warnings go to --log_dir's file too
        # Before TensorFlow starts, whose start-up lines would bury the error.
        run_config = build_config()
    except UsageError as error:
        sys.exit(f"agetf.train: error: {error}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines
    import tensorflow as tf

    from agetf.data import input_pipeline
    from agetf.training import (checkpoints, distribution, job, lost_workers, run_files,
                                termination, trainer as trainer_lib)

    termination.exit_on_sigterm()  # SIGTERM stops the run even while TensorFlow blocks in C++

    try:
        check_data_dir()
        if FLAGS.load:
            job.evaluate(run_config)
        else:
            job.run(run_config, flags_text=FLAGS.flags_into_string())
    except UsageError as error:
        sys.exit(f"agetf.train: error: {error}")
    except trainer_lib.NonFiniteLossError as error:
        sys.exit(f"agetf.train: {error}")
    except termination.Preempted as error:
        print(f"agetf.train: {error}", file=sys.stderr, flush=True)
        return termination.EXIT_CODE
    except (run_files.DiskFullError, run_files.NoTrainedModelError) as error:
        sys.exit(f"agetf.train: error: {error}")
    except tf.errors.ResourceExhaustedError as error:
        if not run_files.is_disk_full(error):
            raise
        sys.exit("agetf.train: error: " + str(run_files.disk_full_error(
            FLAGS.model_dir, detail=checkpoints.one_line(error))))
    except tf.errors.DataLossError as error:
        # A checkpoint's read error is the checkpoint's, not the TFRecords' (the trainer checks
        # checkpoints before restoring; this catches one that reads damaged from elsewhere).
        if os.path.abspath(FLAGS.model_dir) in str(error) or "ckpt-" in str(error):
            sys.exit(f"agetf.train: error: a file in --model_dir={FLAGS.model_dir} is damaged "
                     f"({checkpoints.one_line(error)}); delete it, or the model_dir's checkpoints "
                     "folder to start the run over")
        sys.exit(f"agetf.train: error: {input_pipeline.corrupt_data_error(FLAGS.data_dir)}")
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

    flagfiles.exit_on_bad_flagfile(argv, "agetf.train", FLAGS)  # else absl's help, then the error
    try:
        return FLAGS(argv)
    except flags.Error as error:
        sys.exit(f"agetf.train: error: {' '.join(str(error).split())}")


def console_main():
    """Console entry point (agetf-train), as python -m agetf.train."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    console_main()
