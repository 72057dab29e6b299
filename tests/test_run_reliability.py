"""A model_dir that two runs share, a damaged checkpoint or model file, a full disk: each ends in
one line naming the file and the fix, or in a fallback to what is intact, with a warning line.
"""

import errno
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from agetf import train as train_cli
from agetf.common import files, run_lock
from agetf.training import checkpoints, run_files, train_lib
from agetf.training import distributed_trainer as trainer_lib

from tiny_runs import tiny_config, train  # pytest puts tests/ on sys.path

pytestmark = pytest.mark.slow  # end-to-end: real processes and runs (pytest.ini)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
TIMEOUT_S = 300
# The run every test here copies: one head, 2 steps an epoch, checkpoints ckpt-2 and ckpt-4.
RUN = dict(heads=("age",), steps_per_epoch=2, steps_per_loop=2, summary_images=0)
CLI = ["--img_dim=32", "--alpha=0.35", "--weights=none", "--batchnorm_momentum=0.9",
       "--heads=age",
       "--batch_size=16", "--steps_per_loop=2", "--summary_images=0", "--mixed_precision=float32",
       "--strategy=default", "--print_predictions=0", "--noexport", "--seed=1"]


def sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    """A finished two-epoch run (best.keras, final.keras, ckpt-2 and ckpt-4) to copy."""
    model_dir = tmp_path_factory.mktemp("reliability") / "run"
    train(tiny_config(data_dir, model_dir, **RUN))
    assert os.path.basename(tf.train.latest_checkpoint(str(model_dir / "checkpoints"))) == "ckpt-4"
    return str(model_dir)


def copy_run(finished_run, tmp_path, name="run"):
    model_dir = tmp_path / name
    shutil.copytree(finished_run, model_dir)
    return model_dir


def data_file(model_dir, step):
    return model_dir / "checkpoints" / f"ckpt-{step}.data-00000-of-00001"


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def flip_bits(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        chunk = f.read(64)
        f.seek(os.path.getsize(path) // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))


def error_line(stderr):
    """The one error line of a command whose stderr also holds TensorFlow's start-up lines."""
    errors = [line for line in stderr.splitlines() if line.startswith("agetf.train:")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr[-3000:]
    return errors[0]


def warning_lines(caplog):
    """The warning lines logged through absl (the pytest process has no absl handler)."""
    return [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]


# -- 1. one run per model_dir ---------------------------------------------------------------

def test_the_lock_names_its_holder_and_is_free_again_once_released(tmp_path):
    held = run_lock.acquire(str(tmp_path), "training")
    with pytest.raises(run_lock.RunLockedError) as refused:
        run_lock.acquire(str(tmp_path), "evaluation (--load)")
    message = str(refused.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}, training" in message
    assert f"kill {os.getpid()}" in message and "another --model_dir" in message
    assert "\n" not in message
    held.release()
    run_lock.acquire(str(tmp_path), "training").release()


def test_only_the_chief_takes_the_lock(tmp_path, monkeypatch):
    from agetf.training import distribution

    strategy = tf.distribute.get_strategy()
    monkeypatch.setattr(distribution, "is_chief", lambda _: False)
    assert train_lib.lock_model_dir(str(tmp_path), "training", strategy) is None
    assert not (tmp_path / run_lock.LOCK_FILE).exists()  # workers write to temporary folders
    monkeypatch.setattr(distribution, "is_chief", lambda _: True)
    assert train_lib.lock_model_dir(str(tmp_path), "training", strategy) is not None


def start_cli(*args):
    return subprocess.Popen([sys.executable, "-m", "agetf.train", *args], env=ENV, cwd=REPO,
                            text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_cli(*args, timeout=TIMEOUT_S):
    return subprocess.run([sys.executable, "-m", "agetf.train", *args], env=ENV, cwd=REPO,
                          text=True, capture_output=True, timeout=timeout)


def lock_holder(model_dir):
    try:
        return json.loads((model_dir / run_lock.LOCK_FILE).read_text() or "{}").get("pid")
    except FileNotFoundError:
        return None


def test_a_second_run_on_a_model_dir_in_use_is_refused_and_a_killed_run_frees_it(data_dir,
                                                                                  tmp_path):
    model_dir = tmp_path / "run"
    flags = [f"--data_dir={data_dir}", f"--model_dir={model_dir}", *CLI]
    # A training far too long to end by itself.
    first = start_cli(*flags, "--epochs=1", "--steps_per_epoch=100000")
    try:
        for _ in range(2 * TIMEOUT_S * 10):  # its TensorFlow start-up, at most 10 min
            if lock_holder(model_dir) == first.pid or first.poll() is not None:
                break
            try:
                first.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        assert first.poll() is None, first.communicate()[1][-3000:]
        assert lock_holder(model_dir) == first.pid

        # The same command again, and --load: each refused in one line naming the holder and
        # the fix, without touching the run (no second event file, no checkpoint).
        for extra in (["--epochs=1", "--steps_per_epoch=2"], ["--load"]):
            refused = run_cli(*flags, *extra)
            assert refused.returncode == 1, refused.stderr[-3000:]
            line = error_line(refused.stderr)
            assert line.startswith(f"agetf.train: error: --model_dir={model_dir} is in use by "
                                   f"another agetf.train (pid {first.pid} on host "
                                   f"{socket.gethostname()}, training since"), line
            assert f"kill {first.pid}" in line and "use another --model_dir" in line
        assert first.poll() is None
        event_files = [f for _, _, files in os.walk(model_dir / "logs") for f in files]
        assert len(event_files) <= 2  # the first run's train and validation writers only
    finally:
        first.kill()  # kill -9: nothing runs on the way out, the kernel drops the lock
        first.communicate(timeout=60)

    # The lock dies with its holder: the same command now runs.
    result = run_cli(*flags, "--epochs=1", "--steps_per_epoch=2", timeout=2 * TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Run written to" in result.stdout


# -- 2. damaged checkpoints -------------------------------------------------------------------

@pytest.mark.parametrize("damage", [truncate, flip_bits])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(finished_run, data_dir,
                                                                    tmp_path, caplog, damage):
    model_dir = copy_run(finished_run, tmp_path)
    damage(data_file(model_dir, 4))
    config = tiny_config(data_dir, model_dir, **dict(RUN, epochs=3))
    trainer = trainer_lib.Trainer(config)
    assert trainer.resumed and int(trainer.global_step.numpy()) == 2
    [warning] = warning_lines(caplog)
    assert warning.startswith(f"skipping the damaged checkpoint {model_dir}/checkpoints/"
                              "ckpt-4 (ckpt-4.data-00000-of-00001: "), warning
    assert warning.endswith("resuming from ckpt-2, the newest one that reads")
    if damage is truncate:  # and the run goes on from there, rewriting ckpt-4 whole
        trainer.fit()
        checkpoint_dir = str(model_dir / "checkpoints")
        assert os.path.basename(tf.train.latest_checkpoint(checkpoint_dir)) == "ckpt-6"
        assert checkpoints.checkpoint_damage(os.path.join(checkpoint_dir, "ckpt-4")) is None
        assert json.loads((model_dir / "history.json").read_text())["epoch"] == [1, 2, 3]


def test_no_readable_checkpoint_is_one_line_about_the_checkpoints_not_the_data(
        finished_run, data_dir, tmp_path, parse_train_flags):
    model_dir = copy_run(finished_run, tmp_path)
    flip_bits(data_file(model_dir, 4))
    truncate(data_file(model_dir, 2))
    with pytest.raises(checkpoints.CheckpointDamagedError) as error:
        trainer_lib.Trainer(tiny_config(data_dir, model_dir, **RUN))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"no checkpoint in {model_dir}/checkpoints can be read: ckpt-4 "
                              "(ckpt-4.data-00000-of-00001: ")
    assert "; ckpt-2 (ckpt-2.data-00000-of-00001: " in message
    assert message.endswith(f"delete {model_dir}/checkpoints to start the run over (or restore "
                            "it from a copy)")
    # On the command line: that one line, not the TFRecords' "reconvert the dataset".
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={model_dir}", *CLI, "--epochs=2",
                      "--steps_per_epoch=2")
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(["agetf.train"])
    assert exit_.value.code == f"agetf.train: error: {message}"


# -- 3. damaged best.keras -------------------------------------------------------------------

def test_a_damaged_best_keras_falls_back_to_final_keras_then_one_line(finished_run, data_dir,
                                                                      tmp_path, caplog,
                                                                      parse_train_flags):
    model_dir = copy_run(finished_run, tmp_path)
    truncate(model_dir / "best.keras")
    warnings = []
    model = run_files.load_trained_model(str(model_dir), warn=warnings.append)
    assert model.output_names or model.outputs
    assert warnings == [f"{model_dir}/best.keras is damaged (not a whole .keras zip "
                        f"archive ({os.path.getsize(model_dir / 'best.keras')} bytes; truncated "
                        "or overwritten: File is not a zip file)); using "
                        f"{model_dir}/final.keras instead"]

    # --load evaluates final.keras, saying so in one warning line (absl's logging.warning).
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={model_dir}", *CLI, "--load")
    caplog.clear()
    assert train_cli.main(["agetf.train"]) == 0
    assert [line for line in warning_lines(caplog) if "damaged" in line] == warnings
    assert json.loads((model_dir / "evaluation.json").read_text())["num_images"] > 0

    flip_bits(model_dir / "final.keras")
    with pytest.raises(run_files.NoTrainedModelError) as error:
        run_files.load_trained_model(str(model_dir), warn=warnings.append)
    message = str(error.value)
    assert "\n" not in message
    assert f"{model_dir}/best.keras is damaged (not a whole .keras zip archive" in message
    assert f"{model_dir}/final.keras is damaged (" in message
    assert "delete the damaged file(s) and rerun the training command" in message


# -- 4. a full disk ----------------------------------------------------------------------------

def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_at_a_checkpoint_is_one_line_and_best_keras_stays_with_a_saved_epoch(
        finished_run, data_dir, tmp_path):
    model_dir = copy_run(finished_run, tmp_path)
    # The recorded epochs look bad, so epoch 3 improves on them and would be saved as best.
    history = json.loads((model_dir / "history.json").read_text())
    history["val_loss"] = [1e9 for _ in history["val_loss"]]
    (model_dir / "history.json").write_text(json.dumps(history))
    best_before = sha1(model_dir / "best.keras")
    checkpoints = str(model_dir / "checkpoints")
    latest_before = tf.train.latest_checkpoint(checkpoints)

    trainer = trainer_lib.Trainer(tiny_config(data_dir, model_dir, **dict(RUN, epochs=3)))
    trainer.manager.save = no_space
    with pytest.raises(files.DiskFullError) as error:
        trainer.fit()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"the disk holding {checkpoints} is full (no space left while "
                              "writing checkpoint ckpt-6")
    assert message.endswith("then rerun the same command to resume")
    # No checkpoint holds epoch 3, so neither does best.keras.
    assert tf.train.latest_checkpoint(checkpoints) == latest_before
    assert sha1(model_dir / "best.keras") == best_before


def test_a_full_disk_on_the_command_line_is_one_line_naming_the_path(finished_run, data_dir,
                                                                     tmp_path, monkeypatch,
                                                                     parse_train_flags):
    model_dir = copy_run(finished_run, tmp_path)
    # What TensorFlow raises when a checkpoint's write hits ENOSPC.
    message = f"{model_dir}/checkpoints/ckpt-6_temp/part-00000-of-00001; No space left on device"

    def full(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, message)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", full)
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={model_dir}", *CLI, "--epochs=3",
                      "--steps_per_epoch=2")
    with pytest.raises(SystemExit) as exit_:
        train_cli.main(["agetf.train"])
    assert exit_.value.code == (
        f"agetf.train: error: the disk holding {model_dir}/checkpoints is full (no space left "
        f"while writing checkpoint ckpt-6; {message}); free some space, or use a --model_dir on "
        "another disk, then rerun the same command to resume")
    # And a full disk under a small file: its path, the temporary file removed.
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", no_space)
        with pytest.raises(files.DiskFullError, match=f"the disk holding {model_dir}/x.json "
                           "is full"):
            run_files.write_json(str(model_dir / "x.json"), {})
    assert not [f for f in os.listdir(model_dir) if ".tmp" in f]
