"""Two `python -m agetf.train` worker processes on loopback under MultiWorkerMirroredStrategy.

Two tests of a few runs each (about a minute a run on two cores: both processes trace
the same graph). One: weights identical on both workers, only the chief writes model_dir,
and a rerun with more epochs resumes from the chief's checkpoint. Two: a worker killed
with SIGKILL makes the survivor stop at once with a one-line error, and restarting both
resumes and finishes. Sharding of files
across workers is tested at the pipeline level in test_input_pipeline.py.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from agetf.training import lost_workers

from worker_processes import OutputReader, free_ports  # pytest puts tests/ on sys.path

pytestmark = pytest.mark.slow  # end-to-end: real processes and runs (pytest.ini)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--strategy=multi_worker_mirrored", "--img_dim=32", "--alpha=0.35", "--weights=none",
        "--batch_size=16",
        "--steps_per_epoch=2", "--steps_per_loop=2", "--noexport", "--summary_images=0",
        "--batchnorm_momentum=0.9", "--mixed_precision=float32", "--heads=age_histogram",
        "--print_predictions=0", "--seed=3"]
# A run's bound; a loaded machine, where TensorFlow's import alone can take minutes, sets more.
TIMEOUT_S = int(os.environ.get("AGETF_TEST_TIMEOUT_S", 240))
# A survivor must stop this soon after its peer dies (TensorFlow notices a dead peer on its
# next collective, or within ~10 s by the coordination service's heartbeats).
LOST_WORKER_TIMEOUT_S = 60


def start_workers(args, tmp_dirs):
    """Starts one process per entry of `tmp_dirs` (worker i's TMPDIR), worker 0 the chief."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(len(tmp_dirs))]}
    procs = []
    for index, tmp in enumerate(tmp_dirs):
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp),
                   TF_NUM_INTEROP_THREADS="2", TF_NUM_INTRAOP_THREADS="1",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, "-m", "agetf.train", *args], env=env,
                                      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    return procs


def run_workers(args, tmp_dirs):
    """Runs one process per entry of `tmp_dirs` to the end; returns their (status, output)."""
    procs = start_workers(args, tmp_dirs)
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out) for p, out in zip(procs, outputs)]


def model_variables(checkpoint):
    reader = tf.train.load_checkpoint(checkpoint)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("model/")}


def test_two_workers_train_identically_only_the_chief_writes_and_a_rerun_resumes(
        data_dir, tmp_path):
    model_dir = tmp_path / "run"
    tmp_dirs = [tmp_path / "tmp0", tmp_path / "tmp1"]
    for d in tmp_dirs:
        d.mkdir()
    args = [f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY]

    results = run_workers([*args, "--epochs=1"], tmp_dirs)
    for rc, out in results:
        assert rc == 0, out[-3000:]

    chief_ckpt = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
    worker_ckpts = [os.path.join(root, "checkpoints") for root, dirs, _ in os.walk(tmp_dirs[1])
                    if "checkpoints" in dirs]
    assert chief_ckpt and len(worker_ckpts) == 1, worker_ckpts
    worker_ckpt = tf.train.latest_checkpoint(worker_ckpts[0])
    assert os.path.basename(worker_ckpt) == os.path.basename(chief_ckpt) == "ckpt-2"
    chief_vars, worker_vars = model_variables(chief_ckpt), model_variables(worker_ckpt)
    assert len(chief_vars) > 100 and chief_vars.keys() == worker_vars.keys()
    for name, value in chief_vars.items():
        np.testing.assert_array_equal(value, worker_vars[name], err_msg=name)
    # Training moved the weights away from a fresh model's, on both workers alike.
    assert "Resumed" not in results[0][1]

    # Only the chief writes model_dir: one set of TensorBoard logs, and nothing of the
    # worker's (its checkpoint lives in its own temp folder).
    for name in ("final.keras", "best.keras", "history.json", "run.json", "flags.txt"):
        assert (model_dir / name).exists(), name
    event_files = [os.path.join(root, f) for root, _, files in os.walk(model_dir / "logs")
                   for f in files if "tfevents" in f]
    assert (sorted(os.path.basename(os.path.dirname(f)) for f in event_files)
            == ["train", "validation"])
    assert not any(f.endswith(".keras") or "logs" in root for root, _, files in os.walk(tmp_dirs[1])
                   for f in files)
    history = json.load(open(model_dir / "history.json"))
    assert history["epoch"] == [1]

    # The rerun resumes from the chief's checkpoint on both workers and trains one epoch more.
    results = run_workers([*args, "--epochs=2"], tmp_dirs)
    for rc, out in results:
        assert rc == 0, out[-3000:]
    assert "Resumed from" in results[0][1] and "at epoch 1, step 0" in results[0][1]
    assert os.path.basename(tf.train.latest_checkpoint(str(model_dir / "checkpoints"))) == "ckpt-4"
    assert json.load(open(model_dir / "history.json"))["epoch"] == [1, 2]
    resumed_worker = tf.train.latest_checkpoint(worker_ckpts[0])
    resumed = model_variables(resumed_worker)
    final = model_variables(tf.train.latest_checkpoint(str(model_dir / "checkpoints")))
    for name, value in final.items():
        np.testing.assert_array_equal(value, resumed[name], err_msg=name)
    assert any(not np.array_equal(final[n], chief_vars[n]) for n in final)


def kill_one_and_check_the_survivor(args, tmp_dirs, marker, victim):
    """Starts both workers, SIGKILLs worker `victim` once the chief prints `marker`, and checks
    that the other one exits nonzero, soon, with the one-line error; returns that line and
    both outputs."""
    procs = start_workers(args, tmp_dirs)
    survivor = procs[1 - victim]
    try:
        readers = [OutputReader(p) for p in procs]
        readers[0].wait_for(marker, TIMEOUT_S)
        assert procs[victim].poll() is None, readers[victim].rest()[-3000:]
        procs[victim].kill()
        killed_at = time.monotonic()
        survivor.wait(timeout=LOST_WORKER_TIMEOUT_S)
        assert time.monotonic() - killed_at < LOST_WORKER_TIMEOUT_S
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outputs = [r.rest() for r in readers]
    out = outputs[1 - victim]
    assert survivor.returncode not in (0, None), out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("agetf.train: error:")]
    assert len(errors) == 1 and "lost contact with another worker" in errors[0], out[-3000:]
    return errors[0], outputs


def test_a_killed_worker_stops_the_other_with_a_one_line_error_and_a_restart_resumes(
        data_dir, tmp_path):
    model_dir = tmp_path / "run"
    checkpoints = str(model_dir / "checkpoints")
    tmp_dirs = [tmp_path / "tmp0", tmp_path / "tmp1"]
    for d in tmp_dirs:
        d.mkdir()
    args = [f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY, "--epochs=2"]

    # Worker 1 dies in epoch 2: the chief stops, naming the peer and the fix. (A dead chief
    # is the same path on the other worker; its message is checked below, without paying
    # for a third pair of processes on CI's two cores.)
    error, _ = kill_one_and_check_the_survivor(args, tmp_dirs, "Epoch 2/", victim=1)
    assert "Restart every worker with the same command" in error and checkpoints in error, error
    saved = tf.train.latest_checkpoint(checkpoints)
    assert os.path.basename(saved) == "ckpt-2"

    # Restarted, both resume from the chief's last checkpoint and finish.
    results = run_workers(args, tmp_dirs)
    for rc, out in results:
        assert rc == 0, out[-3000:]
    assert f"Resumed from {saved} at epoch 1, step 0" in results[0][1], results[0][1][-3000:]
    assert os.path.basename(tf.train.latest_checkpoint(checkpoints)) == "ckpt-4"
    assert json.load(open(model_dir / "history.json"))["epoch"] == [1, 2]


# What the survivors actually raised on loopback: a killed peer, a stopped one (caught by the
# chief's coordination service, and by a worker whose chief stopped), a stuck one.
_RESET = ("Collective ops is aborted by: recvmsg:Connection reset by peer\nAdditional GRPC error "
          "information from remote target /job:worker/replica:0/task:1 while calling "
          "/tensorflow.WorkerService/RecvBuf:")
_HEARTBEATS = ("Collective ops is aborted by: Error reported from /job:worker/task:1: The "
               "following tasks are unhealthy (stopped sending heartbeats):\n"
               "/job:worker/replica:0/task:1\nThe tasks have crashed.")
_LEADER = ("Collective ops is aborted by: Failed to send RPC to coordination service. Either the "
           "leader task was preempted/died/restarted unexpectedly or this task is experiencing "
           "network issues.\nAdditional GRPC error information from remote target "
           "/job:worker/replica:0/task:0 while calling /tensorflow.CoordinationService/Heartbeat:")
_TIMEOUT = "Graph execution error:\n\nCollective has timed out during execution.\n"


@pytest.mark.parametrize("error_class,message,reason", [
    (tf.errors.UnavailableError, _RESET,
     "recvmsg:Connection reset by peer talking to /job:worker/replica:0/task:1"),
    (tf.errors.UnavailableError, _HEARTBEATS,
     "/job:worker/replica:0/task:1 stopped sending heartbeats"),
    (tf.errors.UnavailableError, _LEADER,
     "the chief's coordination service at /job:worker/replica:0/task:0 is unreachable"),
    (tf.errors.DeadlineExceededError, _TIMEOUT,
     "a collective waited longer than --collective_timeout=30s for another worker"),
])
def test_a_lost_worker_is_told_in_one_line_with_the_fix(error_class, message, reason):
    error = error_class(None, None, message)
    assert lost_workers.is_lost_worker(error)
    line = lost_workers.lost_worker_message(error, "/runs/a/", collective_timeout=30)
    assert f"lost contact with another worker ({reason})" in line and "\n" not in line, line
    assert line.endswith("Restart every worker with the same command to resume from the last "
                         "checkpoint in /runs/a/checkpoints")
    assert not lost_workers.is_lost_worker(tf.errors.InvalidArgumentError(None, None, "bad shape"))
