"""Choosing the tf.distribute strategy and the mixed-precision policy from plain strings."""

import contextlib
import faulthandler
import hashlib
import json
import os
import socket
import struct
import tempfile
import time

import keras
import tensorflow as tf

from agetf import UsageError
from agetf.config import check_strategy
from agetf.training import lost_workers, termination

_MIRRORED = {}  # devices -> the process's MirroredStrategy over them


TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host0:2222", "host1:2222"]}, '
                     '"task": {"type": "worker", "index": 0}}')


def tf_config():
    """TF_CONFIG as a dict ({} when unset or empty); a one-line ValueError naming TF_CONFIG, the
    problem and the fix when it is not a JSON object (TensorFlow's own parser would only say
    e.g. "Expecting ',' delimiter: line 1 column 41")."""
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return {}
    fix = f"fix it, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}', or unset it"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        near = text[max(0, error.pos - 15):error.pos + 15].replace("\n", " ")
        raise UsageError(f"TF_CONFIG is not valid JSON ({error.msg} at line {error.lineno} column "
                         f"{error.colno}, near {near!r}); {fix}") from None
    if not isinstance(value, dict) or not isinstance(value.get("cluster", {}), dict):
        raise UsageError(f"TF_CONFIG must be a JSON object with a \"cluster\" object; {fix}")
    return value


def tf_config_workers():
    """Number of workers (chief included) that TF_CONFIG names; 0 without TF_CONFIG."""
    cluster = tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def tf_config_peers():
    """The other tasks of TF_CONFIG's chief/worker jobs, e.g.
    [('/job:worker/task:1', 'host:port')]."""
    config = tf_config()
    task = config.get("task", {})
    me = (task.get("type"), str(task.get("index")))
    return [(f"/job:{job}/task:{index}", address)
            for job in ("chief", "worker")
            for index, address in enumerate(config.get("cluster", {}).get(job, []))
            if (job, str(index)) != me]


def _listening(address, timeout=1.0):
    """True when something accepts TCP connections at host:port (a started worker's gRPC server)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def resolve_strategy_name(name):
    """Turns `auto` into a concrete strategy name; checks the others."""
    check_strategy(name)
    tf_config()  # a malformed TF_CONFIG stops here, named, whatever the strategy
    if name != "auto":
        return name
    if tf_config_workers() > 1:
        return "multi_worker_mirrored"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def make_strategy(name, tpu_address="", collective_timeout=0.0, startup_timeout=0.0):
    """Builds the strategy named by --strategy (after `auto` is resolved).

    collective_timeout (seconds, 0 = none): under multi-worker, a collective that waits
    longer for another worker fails with DeadlineExceededError instead of hanging.
    startup_timeout (seconds, 0 = none): under multi-worker, how long to wait for every
    worker of TF_CONFIG to join before stopping with WorkersNeverCame.
    """
    name = resolve_strategy_name(name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        # One per process: every MirroredStrategy numbers its collectives from the same keys, so
        # a second one training in the same process (the LR finder's, then the run's) aborts
        # with "Shape mismatch in the collective instance".
        if tuple(devices) not in _MIRRORED:
            _MIRRORED[tuple(devices)] = tf.distribute.MirroredStrategy(devices=devices)
        return _MIRRORED[tuple(devices)]
    if name == "multi_worker_mirrored":
        # RING over gRPC: the faster on CPU workers (docs/performance.md, collectives).
        # A dead worker is caught by the coordination service's heartbeats within seconds; the
        # timeout catches one that is alive but stuck (a hung file system, a wedged device).
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING,
            timeout_seconds=float(collective_timeout) or None)
        return wait_for_workers(
            lambda: tf.distribute.MultiWorkerMirroredStrategy(communication_options=options),
            startup_timeout)
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def strategy_for(runtime):
    """The strategy a RuntimeConfig names, with its TPU address and multi-worker timeouts."""
    return make_strategy(runtime.strategy, tpu_address=runtime.tpu,
                         collective_timeout=runtime.collective_timeout,
                         startup_timeout=runtime.worker_startup_timeout)


class WorkersNeverCame(UsageError):
    """Not every worker of TF_CONFIG started within --worker_startup_timeout."""


def _own_address():
    """This task's host:port in TF_CONFIG; None if TF_CONFIG does not say."""
    config = tf_config()
    task = config.get("task", {})
    try:
        return config["cluster"][task["type"]][int(task["index"])]
    except (KeyError, IndexError, TypeError, ValueError):
        return None


@contextlib.contextmanager
def _placeholder(address):
    """Listens on this worker's own TF_CONFIG port until TensorFlow's server takes it over, so
    that peers probing for it see it started (each worker's gRPC server only starts inside the
    strategy's creation: without this, two workers probing each other would wait for ever).
    Yields a function that accepts and drops the probes' connections (a full backlog would
    make later probes time out)."""
    try:
        port = int(str(address).rpartition(":")[2])
        if socket.has_dualstack_ipv6():
            server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        else:
            server = socket.create_server(("", port))
    except (OSError, ValueError):  # no port, or taken: TensorFlow's server will say so
        yield lambda: None
        return
    server.setblocking(False)

    def drop_probes():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            # Reset, not closed: no TIME_WAIT left on the port TensorFlow is about to bind.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    try:
        yield drop_probes
    finally:
        drop_probes()
        server.close()


def wait_for_workers(create, timeout):
    """Returns create() (a MultiWorkerMirroredStrategy) once every worker of TF_CONFIG has
    started; WorkersNeverCame, naming the missing ones, when that takes over `timeout`
    seconds (0: no limit).

    Creating the strategy starts this worker's gRPC server and then waits in C++ until every
    task has registered with the chief's coordination service. That wait holds Python's GIL
    (no other Python thread runs) and TensorFlow has by then replaced Python's SIGTERM handler
    with its own, which swallows the signal: with a peer that never starts it hangs for ever,
    deaf to SIGTERM. So the wait happens here first, in Python: every peer's address must
    accept TCP connections (its placeholder, below, or its gRPC server); SIGTERM and the
    deadline work meanwhile. The strategy is then created with every peer up, and if it still
    hangs (a peer died in between), faulthandler's watchdog, which needs no GIL, ends the
    process with status 1 and a thread dump after `timeout` more seconds.
    """
    peers = tf_config_peers()
    if not peers:  # a single worker: nobody to wait for
        return create()
    limit = f"up to {timeout:g}s" if timeout else "with no limit"
    print(f"Waiting {limit} (--worker_startup_timeout) for the {len(peers)} other worker(s) of "
          "TF_CONFIG to start", flush=True)
    deadline = time.monotonic() + timeout if timeout else None
    missing = peers
    with termination.during("waiting for the other workers to start"), \
            _placeholder(_own_address()) as drop_probes:
        while True:
            missing = [(name, address) for name, address in missing if not _listening(address)]
            if not missing:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise WorkersNeverCame(lost_workers.workers_never_came_message(missing, timeout))
            drop_probes()
            time.sleep(0.5)
    if timeout:
        faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        with termination.during("joining the other workers"):
            strategy = create()
    finally:
        if timeout:
            faulthandler.cancel_dump_traceback_later()
    termination.keep_sigterm()  # back from TensorFlow's handler
    return strategy


def _gpus_have_tensor_cores():
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and capability >= (7, 0):
            return True
    return False


def resolve_mixed_precision(mode, strategy):
    """auto: mixed_float16 on GPUs with tensor cores, mixed_bfloat16 on TPU, else float32."""
    if mode != "auto":  # RuntimeConfig checked it is one of MIXED_PRECISION
        return mode
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if _gpus_have_tensor_cores():
        return "mixed_float16"
    return "float32"  # float16 on CPUs is emulated and slower than float32


def set_precision_policy(policy):
    """Sets Keras' global dtype policy (before the model is built)."""
    keras.mixed_precision.set_global_policy(policy)


def is_chief(strategy):
    """True on the one process that writes model_dir (always True outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    return (task_type == "worker" and task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def worker_dir(model_dir, strategy, subdir):
    """Where this process writes `subdir`: model_dir on the chief, a private temp folder elsewhere.

    Multi-worker checkpointing needs every worker to save (the save is collective), but
    only the chief's copy may land in model_dir.
    """
    if is_chief(strategy):
        return os.path.join(model_dir, subdir)
    resolver = strategy.cluster_resolver
    tag = hashlib.sha1(os.path.abspath(model_dir).encode()).hexdigest()[:10]
    return os.path.join(tempfile.gettempdir(),
                        f"agetf-{tag}-{resolver.task_type}_{resolver.task_id}", subdir)


def check_batch_size(batch_size, replicas):
    """A UsageError unless the global batch divides evenly across the replicas."""
    if batch_size % replicas:
        raise UsageError(f"--batch_size={batch_size} does not divide across "
                         f"{replicas} replicas; use a multiple of {replicas}")
