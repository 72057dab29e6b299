"""Runs killed from outside: SIGTERM saves and exits; kill -9 anywhere loses at most the steps since
the last checkpoint, and the same command then completes. Real subprocesses, one command each.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

from agetf.data import dataset_files, input_pipeline

pytestmark = pytest.mark.slow  # end-to-end: real processes and runs (pytest.ini)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
TIMEOUT_S = 180


def start(args):
    return subprocess.Popen([sys.executable, *args], env=ENV, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_until(proc, condition):
    """Polls `condition` while `proc` runs (the wait is on the process, not a sleep)."""
    for _ in range(int(TIMEOUT_S / 0.1)):
        if condition():
            return
        try:
            proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError("process ended before the condition held:\n"
                             f"{proc.stdout.read()[-3000:]}")
    proc.kill()
    raise AssertionError("condition never held")


def latest_step(model_dir):
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def test_sigterm_then_kill_9_mid_epoch_then_the_same_command_finishes(data_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    command = ["-m", "agetf.train", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
               "--img_dim=32", "--alpha=0.35", "--weights=none", "--batch_size=8",
               "--steps_per_epoch=40",
               "--epochs=2", "--steps_per_loop=1", "--checkpoint_every_steps=2", "--noexport",
               "--summary_images=0", "--batchnorm_momentum=0.9", "--mixed_precision=float32",
               "--strategy=default", "--heads=age_histogram", "--print_predictions=0"]

    # SIGTERM mid-epoch: a checkpoint at the current step, a one-line message, exit 143.
    proc = start(command)
    wait_until(proc, lambda: latest_step(model_dir) >= 2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out[-3000:]
    assert "terminated (SIGTERM) at epoch 1" in out and "rerun the same command to resume" in out
    stopped_at = latest_step(model_dir)
    assert 2 <= stopped_at < 40

    # kill -9 after the rerun resumed and checkpointed again: nothing can run on the way out.
    proc = start(command)
    wait_until(proc, lambda: latest_step(model_dir) >= stopped_at + 2)
    proc.kill()
    proc.communicate(timeout=60)
    killed_at = latest_step(model_dir)
    assert killed_at > stopped_at

    # The same command completes from there, and the model_dir holds only whole files.
    result = subprocess.run([sys.executable, *command], env=ENV, cwd=REPO, text=True,
                            capture_output=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert f"Resumed from {model_dir}/checkpoints/ckpt-{killed_at}" in result.stdout
    assert latest_step(model_dir) == 80
    assert json.load(open(os.path.join(model_dir, "history.json")))["epoch"] == [1, 2]
    leftovers = [f for _, _, files in os.walk(model_dir) for f in files if ".tmp" in f]
    assert not leftovers


def test_kill_9_during_conversion_then_the_same_command_converts_everything(faces_dir, tmp_path):
    out = tmp_path / "records"
    command = ["scripts/make_tfrecords", f"--input_dir={faces_dir}", f"--output_dir={out}",
               "--min_shards=2", "--overwrite"]
    proc = start(command)
    wait_until(proc, lambda: (out / ".incomplete").is_dir())
    proc.kill()
    proc.communicate(timeout=60)
    # Shards reach their final names only when complete: whatever is there reads to the end.
    shards = tf.io.gfile.glob(dataset_files.shard_pattern(str(out), "*"))
    assert not input_pipeline.find_corrupt_shards(shards)

    result = subprocess.run([sys.executable, *command], env=ENV, cwd=REPO, text=True,
                            capture_output=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.load(open(out / dataset_files.REPORT_FILE))
    for split in dataset_files.SPLITS:
        files = input_pipeline.list_shards(str(out), split)
        assert sum(1 for _ in tf.data.TFRecordDataset(files)) == report["counts"][split]
    assert not (out / ".incomplete").exists()


# Runs agetf.train with a SIGKILL planted at one moment: inside the save of one checkpoint
# (its files written, the index not yet pointing at them) or inside the export (the SavedModel
# written to its staging folder, not yet renamed into place).
_KILL_AT = """
import os, runpy, signal, sys
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management
moment = sys.argv.pop(1)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if moment.startswith("checkpoint"):
    record, doomed = checkpoint_management.CheckpointManager._record_state, moment.split("=")[1]
    def record_or_die(self):
        if self._latest_checkpoint.endswith(doomed):
            die()
        record(self)
    checkpoint_management.CheckpointManager._record_state = record_or_die
elif moment == "export":
    save = tf.saved_model.save
    tf.saved_model.save = lambda *args, **kwargs: (save(*args, **kwargs), die())
sys.argv[0] = "agetf.train"
runpy.run_module("agetf.train", run_name="__main__", alter_sys=True)
"""


def test_kill_9_inside_a_checkpoint_save_and_inside_the_export_then_the_command_completes(
        data_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    checkpoints = os.path.join(model_dir, "checkpoints")
    flags = [f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--img_dim=32", "--alpha=0.35",
             "--weights=none", "--batch_size=8", "--steps_per_epoch=4", "--epochs=2",
             "--steps_per_loop=1", "--checkpoint_every_steps=1", "--summary_images=0",
             "--batchnorm_momentum=0.9", "--mixed_precision=float32", "--strategy=default",
             "--heads=age_histogram", "--print_predictions=0"]

    def run(*args):
        return subprocess.run([sys.executable, *args], env=ENV, cwd=REPO, text=True,
                              capture_output=True, timeout=TIMEOUT_S)

    # Killed inside the save of step 3: its files are on disk, the index still names step 2.
    killed = run("-c", _KILL_AT, "checkpoint=ckpt-3", *flags)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert latest_step(model_dir) == 2
    assert any(name.startswith("ckpt-3.") for name in os.listdir(checkpoints))

    # The same command resumes from step 2, finishes training, and dies inside the export.
    killed = run("-c", _KILL_AT, "export", *flags)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    assert f"Resumed from {model_dir}/checkpoints/ckpt-2" in killed.stdout
    assert latest_step(model_dir) == 8
    assert not os.path.exists(os.path.join(model_dir, "saved_model"))  # never half there
    assert [e for e in os.listdir(model_dir) if e.startswith("saved_model.tmp-")]

    # Once more: nothing left to train; it evaluates, exports, and clears the leftover.
    result = run("-m", "agetf.train", *flags)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert json.load(open(os.path.join(model_dir, "history.json")))["epoch"] == [1, 2]
    loaded = tf.saved_model.load(os.path.join(model_dir, "saved_model"))
    assert "serving_default" in loaded.signatures
    assert not [e for e in os.listdir(model_dir) if e.startswith("saved_model.")]
