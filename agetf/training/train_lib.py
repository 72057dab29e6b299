"""A whole run from a TrainConfig, callable from Python without absl: lock the model_dir, run
the LR finder where asked, train (or resume), evaluate, export.

    from agetf import config
    from agetf.training import train_lib
    report = train_lib.run(config.TrainConfig(...))      # what evaluation.json holds, and more
    report = train_lib.evaluate(config.TrainConfig(...)) # the trained model in model_dir (--load)

`agetf.train` is this with flags: it builds the config and prints a UsageError as one line.
"""

import dataclasses
import json
import os

import tensorflow as tf
from absl import logging

from agetf import UsageError
from agetf.common import run_lock
from agetf.data import record_audit
from agetf.evaluation import evaluator
from agetf.serving import export as export_lib
from agetf.serving import tflite_export, tflite_int8
from agetf.training import checkpoints, distribution, lr_finder, run_calibration, run_files
from agetf.training import distributed_trainer as trainer_lib

__all__ = ["evaluate", "run", "train"]


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
    under MultiWorkerMirroredStrategy (it writes to a temporary folder), or evaluation of a
    model_dir that does not exist (the evaluation then says there is nothing to evaluate).

    Evaluation takes the same exclusive lock as training: it writes evaluation.json (and with
    TFLite export, tflite/) into model_dir, and a running training replaces best.keras under
    it, so it is refused while a training runs, and a training while it evaluates.
    """
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


def skipped_test_records(input_config, split="test"):
    """With --skip_corrupt_records: logs how many records of the split are unreadable; else None."""
    if not input_config.skip_corrupt_records:
        return None
    audit = record_audit.audit_split(input_config.data_dir, split)
    if audit.lost:
        logging.warning(audit.describe())
    else:
        print(audit.describe())
    return audit


def evaluate_split(model, input_config, settings, path, interval_knots=None):
    """Evaluates `model` on one dataset's split as `settings` (an EvalConfig) ask, prints the
    report and writes it to `path` (and the gender reliability plot into plots/); returns it.
    interval_knots: the age interval's calibration (agetf.training.run_calibration)."""
    audit = skipped_test_records(input_config, settings.split)
    report, lines = evaluator.evaluate(model, input_config, settings.split,
                                       batch_size=settings.batch_size,
                                       print_predictions=settings.print_predictions,
                                       protocol=settings.protocol,
                                       flip_average=settings.flip_average,
                                       interval_knots=interval_knots)
    if audit is not None:
        report["skipped_records"] = audit.skipped
    for line in lines:
        print(line)
    print(evaluator.format_report(report))
    run_calibration.report_calibration(report, path)
    run_files.write_json(path, report)
    return report


def evaluate_and_export(config, export=None):
    """Evaluates the trained model on config.evaluation's split (each dataset's alone when
    there are several), writes the report(s) into model_dir, and exports it as config.export
    asks (`export` overrides whether the SavedModel is written). Returns the report."""
    settings = config.evaluation
    # best.keras, else final.keras: a damaged one is skipped with a warning line.
    model = run_files.load_trained_model(config.model_dir)
    # Fitted on the validation split before the test split is evaluated against it.
    knots = run_calibration.knots_of(run_calibration.calibrate(model, config))
    if config.input.mixed:
        report = {"datasets": {}}
        for source, input_config in config.input.for_each_dataset():
            print(f"Dataset {source.name} ({source.path}):")
            report["datasets"][source.name] = evaluate_split(
                model, input_config, settings,
                os.path.join(config.model_dir, settings.dataset_report_name(source.name)),
                knots)
    else:
        report = evaluate_split(model, config.input, settings,
                                os.path.join(config.model_dir, settings.report_name), knots)
    saved_model = config.export.saved_model if export is None else export
    if saved_model:
        export_dir = config.export.export_dir or os.path.join(config.model_dir, "saved_model")
        export_lib.export_saved_model(model, export_dir, img_dim=config.model.img_dim,
                                      flip_average=settings.flip_average,
                                      interval_knots=knots)
        print(f"Exported SavedModel to {export_dir}")
        report = dict(report, saved_model=export_dir)
    if config.export.tflite:
        paths = tflite_export.export_tflite(model, os.path.join(config.model_dir, "tflite"),
                                            img_dim=config.model.img_dim,
                                            flip_average=settings.flip_average,
                                            calibration_faces=tflite_int8.calibration_faces(
                                                config.input))
        print(f"Exported TFLite models to {os.path.dirname(paths['float32'])}")
        report = dict(report, tflite=paths)
    return report


def train(config, strategy=None, flags_text=None):
    """Trains (or resumes) the run `config` describes; returns the Trainer, or None when the
    LR finder was all that was asked. `flags_text` is written to flags.txt for people. The
    Trainer holds model_dir's lock (trainer.run_lock) until released or garbage-collected."""
    ensure_writable_dir(config.model_dir)
    logging.info("Configuration: %s", json.dumps(trainer_lib.config_to_json(config)))
    finder = config.lr_finder
    # --lr=auto on a resume: the finder ran when the run began; rerunning it on the trained
    # weights would change the learning rate mid-run (and cost its steps on every rerun).
    resume_auto = bool(finder.use_suggestion and not finder.find_only
                       and tf.train.latest_checkpoint(
                           os.path.join(config.model_dir, "checkpoints")))
    if resume_auto:
        found = os.path.join(config.model_dir, "lr_find.json")
        suggestion = lr_finder.saved_suggestion(config.model_dir)
        if suggestion is None:
            raise UsageError(f"--lr=auto: {config.model_dir} holds a checkpoint to resume but "
                             f"{found} is missing or unreadable, so the learning rate the run "
                             "began with is unknown; resume with --lr=NUMBER, or use a new "
                             "--model_dir")
        config = dataclasses.replace(config, lr=suggestion)
        print(f"Resuming with the learning rate the LR finder suggested when this run began, "
              f"{suggestion:.3g} (from {found}); the finder is not rerun")
    strategy = strategy or distribution.strategy_for(config.runtime)
    # Held until this process ends (evaluation and export included); the kernel frees it then.
    lock = lock_model_dir(config.model_dir, "training", strategy)
    if finder.find_only or (finder.use_suggestion and not resume_auto):
        suggestion = lr_finder.run_lr_finder(config, min_lr=finder.min_lr, max_lr=finder.max_lr,
                                             epochs=finder.epochs, steps=finder.steps,
                                             strategy=strategy)
        if finder.find_only:
            return None
        if suggestion is None:
            raise UsageError("the LR finder found no suggestion (the loss never fell); "
                             "pass --lr=NUMBER")
        config = dataclasses.replace(config, lr=suggestion)
        print(f"Training with the suggested learning rate {suggestion:.3g}")
    trainer = trainer_lib.Trainer(config, strategy=strategy)
    trainer.run_lock = lock
    if trainer.chief:
        if flags_text is not None:
            run_files.write_text(os.path.join(config.model_dir, "flags.txt"), flags_text)
        checkpoints.write_run_definition(config.model_dir, config.model)
    trainer.fit()
    return trainer


def run(config, strategy=None, flags_text=None):
    """Trains, then evaluates and exports on the chief; returns a report: the evaluation's
    numbers, `history` (the epoch rows) and where the exports went. None on a worker that is
    not the chief, or when only the LR finder ran."""
    trainer = train(config, strategy=strategy, flags_text=flags_text)
    if trainer is None or not trainer.chief:
        return None
    try:
        report = evaluate_and_export(trainer.config)
    finally:  # a notebook goes on after run(): the next run or evaluate may take the lock
        if trainer.run_lock is not None:
            trainer.run_lock.release()
    print(f"Run written to {config.model_dir}; watch it with: "
          f"tensorboard --logdir {os.path.join(config.model_dir, 'logs')}")
    return dict(report, history=trainer.history)


def evaluate(config):
    """Evaluates (and, with config.export.export_dir, exports) the trained model in
    config.model_dir, as --load does; returns the report."""
    lock = lock_model_dir(config.model_dir, "evaluation (--load)")
    report = evaluate_and_export(config, export=bool(config.export.export_dir))
    del lock  # held until the report and the exports are written
    return report
