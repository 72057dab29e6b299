"""The one line agetf.train prints for a failure it can explain (a full disk, damaged files, a
lost worker), instead of TensorFlow's traceback; every other exception keeps its traceback."""

import os

import tensorflow as tf

from agetf import UsageError
from agetf.common import files
from agetf.data import input_pipeline
from agetf.training import checkpoints, distributed_trainer, distribution, lost_workers, run_files


def one_line(error, config):
    """The line (without the program's name) that explains `error` in the run `config`, or
    None for an error with no better words than its traceback."""
    if isinstance(error, distributed_trainer.NonFiniteLossError):
        return str(error)
    if isinstance(error, (UsageError, files.DiskFullError, run_files.NoTrainedModelError)):
        return f"error: {error}"
    if isinstance(error, tf.errors.ResourceExhaustedError):
        if not files.is_disk_full(error):
            return None
        return "error: " + str(run_files.disk_full_error(
            config.model_dir, detail=checkpoints.one_line(error)))
    if isinstance(error, tf.errors.DataLossError):
        return f"error: {_damaged_file(error, config)}"
    if isinstance(error, tf.errors.OpError):
        strategy = distribution.resolve_strategy_name(config.runtime.strategy)
        if strategy == "multi_worker_mirrored" and lost_workers.is_lost_worker(error):
            return "error: " + lost_workers.lost_worker_message(
                error, config.model_dir, config.runtime.collective_timeout)
    return None


def _damaged_file(error, config):
    # A checkpoint's read error is the checkpoint's, not the TFRecords' (the trainer checks
    # checkpoints before restoring; this catches one that reads damaged from elsewhere).
    if os.path.abspath(config.model_dir) in str(error) or "ckpt-" in str(error):
        return (f"a file in --model_dir={config.model_dir} is damaged "
                f"({checkpoints.one_line(error)}); delete it, or the model_dir's checkpoints "
                "folder to start the run over")
    return input_pipeline.corrupt_data_error(*(source.path for source in config.input.sources))
