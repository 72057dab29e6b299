"""Multi-worker start-up: a peer that never comes, SIGTERM while waiting for it, a malformed
TF_CONFIG. Real `python -m agetf.train` processes, worker 0 of two with no worker 1 (a pod
never scheduled), started together once for the module: each costs a TensorFlow import, the
bulk of its time on CI's two cores. They stop before reading any record, so the data folder
holds empty shards.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from agetf.data import dataset_files
from agetf.training import distribution, lost_workers

from worker_processes import OutputReader, free_ports

pytestmark = pytest.mark.slow  # end-to-end: real processes and runs (pytest.ini)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPORT_TIMEOUT_S = 600  # TensorFlow's import on a loaded 2-core machine; the bounds below are tight
STARTUP_TIMEOUT_S = 5
EXIT_TIMEOUT_S = 120  # TensorFlow's teardown after an error, at a few % of a loaded core
ERROR = "agetf.train: error:"


def _start(tmp_path, name, tf_config, *flags):
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    for split in dataset_files.SPLITS:
        (data_dir / dataset_files.shard_name("faces", split, 0, 1)).touch()
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=tf_config,
               TF_NUM_INTEROP_THREADS="2", TF_NUM_INTRAOP_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agetf.train", f"--data_dir={data_dir}",
         f"--model_dir={tmp_path / name}", "--strategy=multi_worker_mirrored", "--img_dim=32",
         "--alpha=0.35", "--weights=none", "--noexport", "--heads=age_histogram", *flags],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, OutputReader(proc)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three runs started at once: {name: (process, reader, [worker 0's, worker 1's address])}."""
    tmp_path = tmp_path_factory.mktemp("startup")
    started = {}
    for name, timeout in (("never_came", STARTUP_TIMEOUT_S), ("sigterm", 600)):
        ports = free_ports(2)  # worker 1's port: free, and nobody will listen there
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
        started[name] = (*_start(tmp_path, name, config, f"--worker_startup_timeout={timeout}"),
                         cluster["worker"])
    bad = '{"cluster": {"worker": ["127.0.0.1:1"]} "task": {"type": "worker", "index": 0}}'
    started["malformed"] = (*_start(tmp_path, "malformed", bad), None)
    yield started
    for proc, _, _ in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _errors(output):
    assert "Traceback" not in output, output[-3000:]
    return [line for line in output.splitlines() if line.startswith(ERROR)]


def test_a_worker_that_never_comes_stops_the_chief_with_one_line_naming_it(runs):
    proc, reader, (_, missing) = runs["never_came"]
    reader.wait_for(f"Waiting up to {STARTUP_TIMEOUT_S}s", IMPORT_TIMEOUT_S)
    reader.wait_for(ERROR, STARTUP_TIMEOUT_S + 30)
    try:
        proc.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("did not exit after its error:\n" + reader.rest()[-3000:]) from None
    output = reader.rest()
    assert proc.returncode == 1, output[-3000:]
    errors = _errors(output)
    assert len(errors) == 1, output[-3000:]
    assert f"/job:worker/task:1 at {missing} never came" in errors[0], errors[0]
    assert f"--worker_startup_timeout={STARTUP_TIMEOUT_S}s" in errors[0], errors[0]
    assert "cannot start without it. Start every worker TF_CONFIG names" in errors[0], errors[0]


def test_sigterm_while_waiting_for_a_worker_exits_within_seconds(runs):
    proc, reader, (own, _) = runs["sigterm"]
    reader.wait_for("Waiting up to 600s", IMPORT_TIMEOUT_S)
    # Its own port listens once it waits for worker 1.
    deadline = time.monotonic() + 120
    while not distribution._listening(own) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)
    assert proc.poll() is None, reader.rest()[-3000:]
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    proc.wait(timeout=30)
    assert time.monotonic() - sent < 30
    output = reader.rest()
    assert proc.returncode == 143, output[-3000:]
    assert ("agetf.train: terminated (SIGTERM) while waiting for the other workers to start"
            in output), output[-3000:]
    assert not _errors(output)


def test_a_malformed_tf_config_is_named_in_one_line_with_the_fix(runs):
    proc, reader, _ = runs["malformed"]
    proc.wait(timeout=IMPORT_TIMEOUT_S)
    output = reader.rest()
    assert proc.returncode == 1, output[-3000:]
    errors = _errors(output)
    assert len(errors) == 1, output[-3000:]
    assert errors[0].startswith(f"{ERROR} TF_CONFIG is not valid JSON (Expecting ',' delimiter "
                                "at line 1 column 41"), errors[0]
    assert "fix it, e.g. TF_CONFIG='{\"cluster\"" in errors[0] and "or unset it" in errors[0]


def test_tf_config_parsing_and_peers(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribution.tf_config() == {} and distribution.tf_config_peers() == []
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"chief": ["c:1"], "worker": ["w0:2", "w1:3"]}, "task": {"type": "worker",
                                                                          "index": "0"}}))
    assert distribution.tf_config_workers() == 3
    assert distribution.tf_config_peers() == [("/job:chief/task:0", "c:1"),
                                              ("/job:worker/task:1", "w1:3")]
    monkeypatch.setenv("TF_CONFIG", "[1, 2]")
    with pytest.raises(ValueError, match="TF_CONFIG must be a JSON object"):
        distribution.tf_config()
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}')
    with pytest.raises(ValueError, match=r"^TF_CONFIG is not valid JSON \(Expecting ',' delimiter"):
        distribution.resolve_strategy_name("default")


def test_the_never_came_line_names_every_missing_worker():
    line = lost_workers.workers_never_came_message(
        [("/job:chief/task:0", "c:1"), ("/job:worker/task:2", "w2:3")], timeout=30)
    assert line.startswith("/job:chief/task:0 at c:1, /job:worker/task:2 at w2:3 never came "
                           "(nothing listens there) within --worker_startup_timeout=30s; the "
                           "job cannot start without them. Start every worker TF_CONFIG "
                           "names"), line
    assert "\n" not in line and line.endswith("or raise --worker_startup_timeout")
