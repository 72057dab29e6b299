"""The flags of agetf.train, and how they become one TrainConfig.

Each flag's default is its config field's, so it is written once. Defined when imported,
by agetf.train only; no TensorFlow, so a bad value is refused before TensorFlow starts.
"""

from absl import flags, logging

from agetf import UsageError, config
from agetf.common import head_names
from agetf.data.input_config import NO_AUGMENTATION, AugmentConfig, InputConfig
from agetf.modeling.model_config import ModelConfig

Train, Fine, Finder = config.TrainConfig, config.FineTuneConfig, config.LRFinderConfig
Plateau, Cyclic, Cosine = config.PlateauSchedule, config.CyclicSchedule, config.CosineSchedule
Eval, Export, Runtime = config.EvalConfig, config.ExportConfig, config.RuntimeConfig

# The older project's flags, same names and meaning.
flags.DEFINE_enum("type", "classification", ["classification", "regression"],
                  "classification: age histogram (or ranges with --range_mode); "
                  "regression: age/100.")
flags.DEFINE_boolean("range_mode", False,
                     "With --type=classification: 17 age ranges instead of the histogram.")
flags.DEFINE_boolean("predict_gender", False, "Add the gender head.")
flags.DEFINE_list("heads", [], "Explicit heads (age_histogram, age_range, age, gender); "
                  "overrides --type/--range_mode/--predict_gender.")
flags.DEFINE_string("base_model", ModelConfig.backbone, "Backbone: MobileNetV2 or ResNet50.")
flags.DEFINE_integer("img_dim", ModelConfig.img_dim, "Square input size in pixels.")
flags.DEFINE_integer("batch_size", Train.batch_size,
                     "Global batch size (over all replicas and workers).")
flags.DEFINE_string("lr_scheduler", Train.schedule.name,
                    "constant, reduce_lr_on_plateau, cyclic_lr or cosine.")
flags.DEFINE_float("age_deviation", InputConfig.age_deviation, "Sigma in years of the age "
                   "histogram; default: the one the records were converted with.")
flags.DEFINE_boolean("load", False, "Evaluate the trained model in --model_dir on the test split "
                     "instead of training (with --export_dir: export it too).")
flags.DEFINE_boolean("fine_tuning", Fine.enabled, "Two stages: heads on a frozen backbone, then "
                     "the top of the backbone unfrozen.")
flags.DEFINE_boolean("lr_find", Finder.find_only, "Run the LR range test, write "
                     "plots/lr_find.png and lr_find.json, and stop.")

# Data and output.
flags.DEFINE_string("data_dir", None, "Converted dataset (scripts/make_tfrecords output), or "
                    "several with sampling weights: PATH:WEIGHT,PATH:WEIGHT,... (training mixes "
                    "them; evaluation reports each alone).")
flags.DEFINE_string("model_dir", None,
                    "Everything a run writes: checkpoints, logs, models, plots.")
flags.DEFINE_string("init_from", Train.init_from, "A finished run's --model_dir: a new run "
                    "starts from its weights, layer by layer by name (heads it lacks start "
                    "fresh); a resumed run ignores it.")
flags.DEFINE_string("export_dir", Export.export_dir,
                    "SavedModel destination; default MODEL_DIR/saved_model.")
flags.DEFINE_boolean("export", Export.saved_model, "Export a SavedModel after training.")
flags.DEFINE_boolean("export_tflite", Export.tflite, "Also write TFLite models (float32, "
                     "float16, dynamic int8, full int8 calibrated on validation faces; uint8 "
                     "image in) to MODEL_DIR/tflite after the SavedModel export.")
flags.DEFINE_enum("eval_split", Eval.split, list(config.EVAL_SPLITS),
                  "Split that --load and the end of training evaluate; validation writes "
                  "evaluation_validation.json, so settings can be chosen without looking at test.")
flags.DEFINE_enum("eval_protocol", Eval.protocol, list(config.EVAL_PROTOCOLS),
                  "Test images to evaluate: random (the whole test split) or ages_21_60 (the "
                  "ordinal-regression papers' UTKFace protocol).")
flags.DEFINE_boolean("test_time_flip", Eval.flip_average, "Evaluate and export the mean of each "
                     "face's and its mirror image's outputs (test-time flip; twice the "
                     "inference cost).")
flags.DEFINE_integer("print_predictions", Eval.print_predictions,
                     "Per-image lines to print when evaluating.")
flags.DEFINE_boolean("cache", InputConfig.cache,
                     "Cache decoded images in memory (when the set fits).")
flags.DEFINE_integer("shuffle_buffer", InputConfig.shuffle_buffer, "Record shuffle buffer.")
flags.DEFINE_boolean("augment", True, "Augment training images (flip, crop, colour, blur).")
flags.DEFINE_list("crop_scale", [str(v) for v in AugmentConfig.crop_scale],
                  "LOW,HIGH: area of the random training crop as a fraction of the image's; "
                  "HIGH above 1 (at most 2) zooms out: a box larger than the image shows the "
                  "face smaller inside a mirrored border, as a loosely framed face. With "
                  "--augment.")
flags.DEFINE_float("grey_probability", AugmentConfig.grey_probability,
                   "Fraction of training images turned grey (luminance in all three channels), "
                   "for grey photos elsewhere. With --augment.")
flags.DEFINE_boolean("skip_corrupt_records", InputConfig.skip_corrupt_records,
                     "Skip unreadable records instead of stopping.")
flags.DEFINE_integer("seed", InputConfig.seed, "Seed for shuffling and augmentation.")
flags.DEFINE_string("tf_data_service", InputConfig.data_service, "grpc://HOST:PORT of a tf.data "
                    "service dispatcher (python -m agetf.data_service) that runs training "
                    "input preprocessing.")

# Model.
flags.DEFINE_string("weights", ModelConfig.weights, "Backbone weights: imagenet (as "
                    "keras.applications; downloaded once into the Keras cache), none (random), "
                    "or a .h5 file path.")
flags.DEFINE_float("alpha", ModelConfig.alpha, "MobileNetV2 width multiplier.")
flags.DEFINE_float("dropout", ModelConfig.dropout, "Dropout before the heads.")
flags.DEFINE_float("batchnorm_momentum", ModelConfig.batchnorm_momentum, "Override the "
                   "backbone's BatchNorm momentum (e.g. 0.9 for short runs from scratch); "
                   "default: Keras'.")
flags.DEFINE_list("loss_weights", [],
                  "Per-head loss weights, e.g. age_histogram=1,gender=0.5.")
flags.DEFINE_enum("regression_loss", Train.regression_loss, list(config.REGRESSION_LOSSES),
                  "Loss of the regression head.")

# Optimization.
flags.DEFINE_integer("epochs", Train.epochs, "Epochs (without --fine_tuning).")
flags.DEFINE_string("lr", f"{Train.lr:g}", "Learning rate, or 'auto' to run the LR finder "
                    "first and use its suggestion.")
flags.DEFINE_enum("optimizer", Train.optimizer, list(config.OPTIMIZERS), "Optimizer.")
flags.DEFINE_float("momentum", Train.momentum, "SGD momentum.")
flags.DEFINE_string("best_metric", Train.best_metric, "Validation metric that picks best.keras.")
flags.DEFINE_integer("early_stopping_patience", Train.early_stopping_patience, "Stop after this "
                     "many epochs without improvement of --best_metric; 0 = off.")
flags.DEFINE_string("plateau_monitor", Plateau.monitor, "ReduceLROnPlateau: monitored metric.")
flags.DEFINE_enum("plateau_mode", Plateau.mode, list(config.PLATEAU_MODES), "ReduceLROnPlateau: "
                  "whether the monitored metric should fall or rise; auto: rise for accuracies "
                  "and CS@5.")
flags.DEFINE_float("plateau_factor", Plateau.factor, "ReduceLROnPlateau: factor.")
flags.DEFINE_integer("plateau_patience", Plateau.patience, "ReduceLROnPlateau: patience in epochs.")
flags.DEFINE_integer("plateau_cooldown", Plateau.cooldown,
                     "ReduceLROnPlateau: cooldown in epochs.")
flags.DEFINE_float("plateau_min_lr", Plateau.min_lr, "ReduceLROnPlateau: lower bound.")
flags.DEFINE_float("clr_base_lr", Cyclic.base_lr, "CyclicLR: lower bound.")
flags.DEFINE_float("clr_max_lr", Cyclic.max_lr, "CyclicLR: upper bound.")
flags.DEFINE_enum("clr_mode", Cyclic.mode, list(config.CYCLIC_MODES), "CyclicLR mode.")
flags.DEFINE_float("clr_gamma", Cyclic.gamma, "CyclicLR exp_range gamma.")
flags.DEFINE_float("clr_half_cycle_epochs", Cyclic.half_cycle_epochs,
                   "CyclicLR: half cycle in epochs.")
flags.DEFINE_integer("clr_half_cycle_steps", Cyclic.half_cycle_steps,
                     "CyclicLR: half cycle in steps (overrides epochs).")
flags.DEFINE_float("warmup_epochs", Cosine.warmup_epochs, "Cosine: linear warm-up epochs.")
flags.DEFINE_float("cosine_min_lr", Cosine.min_lr, "Cosine: final learning rate.")
flags.DEFINE_float("lr_find_min", Finder.min_lr, "LR finder: first learning rate.")
flags.DEFINE_float("lr_find_max", Finder.max_lr, "LR finder: last learning rate.")
flags.DEFINE_float("lr_find_epochs", Finder.epochs, "LR finder: length in epochs.")
flags.DEFINE_integer("lr_find_steps", Finder.steps,
                     "LR finder: length in steps (overrides epochs).")
flags.DEFINE_integer("head_epochs", Fine.head_epochs,
                     "Fine-tuning stage 1: epochs on a frozen backbone.")
flags.DEFINE_integer("fine_tune_epochs", Fine.fine_tune_epochs,
                     "Fine-tuning stage 2: epochs with the top unfrozen.")
flags.DEFINE_float("fine_tune_lr", Fine.fine_tune_lr, "Fine-tuning stage 2 learning rate.")
flags.DEFINE_string("unfreeze_from", Fine.unfreeze_from, "Fine-tuning: first backbone layer name "
                    "prefix to unfreeze; default block_16_ (MobileNetV2) or conv5_ (ResNet50).")
flags.DEFINE_enum("fine_tune_batchnorm", Fine.batchnorm, config.FINE_TUNE_BATCHNORM,
                  "Fine-tuning stage 2: the unfrozen BatchNorm layers stay frozen (inference "
                  "mode, ImageNet statistics) or train (batch statistics, moving averages "
                  "updated, gamma and beta learned).")

# Execution.
flags.DEFINE_string("strategy", Runtime.strategy,
                    "auto, default, mirrored, multi_worker_mirrored or tpu.")
flags.DEFINE_string("tpu", Runtime.tpu, "TPU address for --strategy=tpu.")
flags.DEFINE_float("collective_timeout", Runtime.collective_timeout, "Multi-worker: seconds a "
                   "collective may wait for another worker before the run stops with an error (a "
                   "worker alive but stuck); 0 = wait for ever. A dead worker is noticed within "
                   "seconds anyway.")
flags.DEFINE_float("worker_startup_timeout", Runtime.worker_startup_timeout, "Multi-worker: "
                   "seconds to wait at start-up for every worker of TF_CONFIG to join before the "
                   "run stops with an error naming the missing ones (a pod never scheduled); "
                   "0 = wait for ever.")
flags.DEFINE_string("mixed_precision", Runtime.mixed_precision,
                    "auto, float32, mixed_float16 or mixed_bfloat16.")
flags.DEFINE_boolean("jit_compile", Runtime.jit_compile,
                     "XLA-compile the forward and backward pass.")
flags.DEFINE_integer("steps_per_loop", Runtime.steps_per_loop, "Training steps per host call.")
flags.DEFINE_integer("steps_per_epoch", Train.steps_per_epoch,
                     "0: one pass over the training split.")
flags.DEFINE_integer("validation_steps", Train.validation_steps, "0: the whole validation split.")
flags.DEFINE_integer("checkpoint_every_steps", Train.checkpoint_every_steps,
                     "Also checkpoint every N steps; 0: epoch ends only.")
flags.DEFINE_integer("summary_images", Train.summary_images,
                     "Validation faces in the TensorBoard grid; 0 = none.")
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


def resolve_heads(values):
    """The heads the flags ask for, in HEADS order: the order never defines a model."""
    if values.heads:  # ModelConfig checks them
        return head_names.in_canonical_order(values.heads)
    return head_names.select_heads(values.type, values.range_mode, values.predict_gender)


def parse_profile_steps(items):
    """--profile_steps as (START, END), or None when not given; RuntimeConfig checks the order."""
    if not items:
        return None
    try:
        start, end = (int(item) for item in items)
    except ValueError:  # not two items, or not whole numbers
        raise UsageError(config.profile_steps_error(",".join(items))) from None
    return start, end


def parse_lr(text):
    """--lr as a number, or None for 'auto'; TrainConfig checks that it is > 0."""
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--lr={text} is neither a number nor 'auto'") from None


def trained_loss_weights(items, heads):
    """--loss_weights of the heads this run trains. An entry for another head (a flagfile's
    age_histogram=5 under --type=regression) is skipped with one warning line naming it; an
    entry that names no head at all is kept, for TrainConfig to refuse."""
    weights = parse_loss_weights(items)
    skipped = [f"{head}={value:g}" for head, value in weights.items()
               if head in head_names.HEADS and head not in heads]
    if skipped:
        logging.warning("--loss_weights: skipping %s, for heads this run does not train (it "
                        "trains %s)", ", ".join(skipped), ", ".join(heads))
    return {head: value for head, value in weights.items()
            if head in heads or head not in head_names.HEADS}


def schedule_config(values):
    """--lr_scheduler and its flags as the schedule's config. Every schedule's flags are
    checked, the unused ones too, so a flagfile's bad value surfaces without a schedule change."""
    name = values.lr_scheduler
    if name not in config.SCHEDULES:
        raise UsageError(f"--lr_scheduler={name} is unknown; use one of "
                         f"{', '.join(config.SCHEDULES)}")
    built = {
        config.ConstantSchedule.name: config.ConstantSchedule(),
        Plateau.name: Plateau(
            monitor=values.plateau_monitor, mode=values.plateau_mode,
            factor=values.plateau_factor, patience=values.plateau_patience,
            cooldown=values.plateau_cooldown, min_lr=values.plateau_min_lr),
        Cyclic.name: Cyclic(
            base_lr=values.clr_base_lr, max_lr=values.clr_max_lr, mode=values.clr_mode,
            gamma=values.clr_gamma, half_cycle_epochs=values.clr_half_cycle_epochs,
            half_cycle_steps=values.clr_half_cycle_steps),
        Cosine.name: Cosine(warmup_epochs=values.warmup_epochs, min_lr=values.cosine_min_lr),
    }
    return built[name]


def augment_config(values):
    """--augment and its flags as the AugmentConfig. Its flags are checked with --augment off
    too, so a flagfile's bad value surfaces without turning augmentation on."""
    try:
        crop_scale = tuple(float(item) for item in values.crop_scale)
    except ValueError:
        raise UsageError(f"--crop_scale={','.join(values.crop_scale)} must be LOW,HIGH: two "
                         "numbers, e.g. --crop_scale=0.8,1.4") from None
    augment = AugmentConfig(crop_scale=crop_scale, grey_probability=values.grey_probability)
    return augment if values.augment else NO_AUGMENTATION


def build_config(values):
    """The parsed flags `values` (absl's FLAGS) as one TrainConfig, every value checked (no
    TensorFlow).

    Raises:
        UsageError: a value that cannot work, named with its fix in one line.
    """
    lr = parse_lr(values.lr)
    schedule = schedule_config(values)
    heads = resolve_heads(values)
    return Train(
        model_dir=values.model_dir, init_from=values.init_from,
        input=InputConfig(
            data_dir=values.data_dir, img_dim=values.img_dim,
            shuffle_buffer=values.shuffle_buffer, cache=values.cache,
            age_deviation=values.age_deviation,
            skip_corrupt_records=values.skip_corrupt_records, seed=values.seed,
            data_service=values.tf_data_service, augment=augment_config(values)),
        model=ModelConfig(
            backbone=values.base_model, img_dim=values.img_dim, heads=heads, alpha=values.alpha,
            weights=values.weights, dropout=values.dropout,
            batchnorm_momentum=values.batchnorm_momentum),
        epochs=values.epochs, batch_size=values.batch_size, lr=Train.lr if lr is None else lr,
        optimizer=values.optimizer, momentum=values.momentum,
        loss_weights=trained_loss_weights(values.loss_weights, heads),
        regression_loss=values.regression_loss, schedule=schedule,
        fine_tune=Fine(
            enabled=values.fine_tuning, head_epochs=values.head_epochs,
            fine_tune_epochs=values.fine_tune_epochs, fine_tune_lr=values.fine_tune_lr,
            unfreeze_from=values.unfreeze_from, batchnorm=values.fine_tune_batchnorm),
        lr_finder=Finder(
            find_only=values.lr_find, use_suggestion=lr is None, min_lr=values.lr_find_min,
            max_lr=values.lr_find_max, epochs=values.lr_find_epochs, steps=values.lr_find_steps),
        evaluation=Eval(
            split=values.eval_split, protocol=values.eval_protocol,
            flip_average=values.test_time_flip, print_predictions=values.print_predictions),
        export=Export(saved_model=values.export, export_dir=values.export_dir,
                      tflite=values.export_tflite),
        runtime=Runtime(
            strategy=values.strategy, tpu=values.tpu,
            collective_timeout=values.collective_timeout,
            worker_startup_timeout=values.worker_startup_timeout,
            mixed_precision=values.mixed_precision, jit_compile=values.jit_compile,
            steps_per_loop=values.steps_per_loop,
            profile_steps=parse_profile_steps(values.profile_steps)),
        steps_per_epoch=values.steps_per_epoch, validation_steps=values.validation_steps,
        checkpoint_every_steps=values.checkpoint_every_steps, best_metric=values.best_metric,
        early_stopping_patience=values.early_stopping_patience,
        summary_images=values.summary_images)
