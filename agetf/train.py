"""Train, evaluate and export a face age/gender model.

    python -m agetf.train --flagfile flags/demo.flags
    python -m agetf.train --flagfile flags/demo.flags --load          # evaluate the trained model

The flags (agetf.train_flags) become one agetf.config.TrainConfig, checked once before
TensorFlow starts (`build_config`); agetf.training.train_lib runs it. Rerunning the same
command resumes from the latest checkpoint in --model_dir. A UsageError, and each failure
agetf.training.run_errors can explain, is printed as one line; anything else keeps its
traceback.
"""

import os
import sys

from absl import app, flags, logging

from agetf import UsageError, config, train_flags  # noqa: F401  (config: the TrainConfig's module)

FLAGS = flags.FLAGS


def build_config():
    """The flags as one TrainConfig, every value checked (no TensorFlow); raises UsageError."""
    return train_flags.build_config(FLAGS)


def check_data_dir(data_dir=None):
    """A one-line UsageError unless each dataset of the data dir (default --data_dir) holds all
    three splits' shards."""
    from agetf.data import dataset_files, input_config, input_pipeline  # TensorFlow: after checks

    for source in input_config.parse_data_dirs(data_dir or FLAGS.data_dir):
        for split in dataset_files.SPLITS:
            input_pipeline.list_shards(source.path, split)


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
    # TensorFlow starts here, after the flags are checked.
    from agetf.training import run_errors, termination, train_lib

    termination.exit_on_sigterm()  # SIGTERM stops the run even while TensorFlow blocks in C++
    try:
        check_data_dir(run_config.input.data_dir)
        if FLAGS.load:
            train_lib.evaluate(run_config)
        else:
            train_lib.run(run_config, flags_text=FLAGS.flags_into_string())
    except termination.Preempted as error:
        print(f"agetf.train: {error}", file=sys.stderr, flush=True)
        return termination.EXIT_CODE
    except Exception as error:
        line = run_errors.one_line(error, run_config)
        if line is None:
            raise
        sys.exit(f"agetf.train: {line}")
    return 0


def parse_flags(argv):
    """absl's parsing, but a value it refuses (an enum, a number, a missing flag) gets one line
    like every other bad value, not absl's FATAL message and a pointer to --helpshort."""
    from agetf.common import flagfiles  # only the command line needs it

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
