"""Two `python -m agetf.train` worker processes on loopback under MultiWorkerMirroredStrategy.

One test, two runs (about a minute each on two cores: both processes trace the same
graph): weights identical on both workers, only the chief writes model_dir, and a
rerun with more epochs resumes from the chief's checkpoint. Sharding of files across
workers is tested at the pipeline level in test_input_pipeline.py.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--strategy=multi_worker_mirrored", "--img_dim=32", "--alpha=0.35", "--batch_size=16",
        "--steps_per_epoch=2", "--steps_per_loop=2", "--noexport", "--summary_images=0",
        "--batchnorm_momentum=0.9", "--mixed_precision=float32", "--heads=age_histogram",
        "--print_predictions=0", "--seed=3"]
TIMEOUT_S = 240


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_workers(args, tmp_dirs):
    """Runs one process per entry of `tmp_dirs` (worker i's TMPDIR); returns their results."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(len(tmp_dirs))]}
    procs = []
    for index, tmp in enumerate(tmp_dirs):
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp),
                   TF_NUM_INTEROP_THREADS="2", TF_NUM_INTRAOP_THREADS="1",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, "-m", "agetf.train", *args], env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
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


def test_two_workers_train_identically_only_the_chief_writes_and_a_rerun_resumes(data_dir, tmp_path):
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
    assert sorted(os.path.basename(os.path.dirname(f)) for f in event_files) == ["train", "validation"]
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
