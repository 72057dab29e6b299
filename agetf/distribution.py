"""Choosing the tf.distribute strategy and the mixed-precision policy from plain strings."""

import hashlib
import json
import os
import tempfile

import keras
import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker_mirrored", "tpu")
MIXED_PRECISION = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
_MIRRORED = {}  # devices -> the process's MirroredStrategy over them


def tf_config_workers():
    """Number of workers (chief included) that TF_CONFIG names; 0 without TF_CONFIG."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}); fix or unset it") from error
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def resolve_strategy_name(name):
    """Turns `auto` into a concrete strategy name; checks the others."""
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}; got {name!r}")
    if name != "auto":
        return name
    if tf_config_workers() > 1:
        return "multi_worker_mirrored"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def make_strategy(name, tpu_address="", collective_timeout=0.0):
    """Builds the strategy named by --strategy (after `auto` is resolved).

    collective_timeout (seconds, 0 = none): under multi-worker, a collective that waits
    longer for another worker fails with DeadlineExceededError instead of hanging.
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
        # RING over gRPC: on two CPU workers on loopback its first step came in half the time of AUTO's.
        # A dead worker is caught by the coordination service's heartbeats within seconds; the
        # timeout catches one that is alive but stuck (a hung file system, a wedged device).
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING,
            timeout_seconds=float(collective_timeout) or None)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _gpus_have_tensor_cores():
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and capability >= (7, 0):
            return True
    return False


def resolve_mixed_precision(mode, strategy):
    """auto: mixed_float16 on GPUs with tensor cores, mixed_bfloat16 on TPU, else float32."""
    if mode not in MIXED_PRECISION:
        raise ValueError(f"--mixed_precision must be one of {', '.join(MIXED_PRECISION)}; got {mode!r}")
    if mode != "auto":
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
    return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def worker_dir(model_dir, strategy, subdir):
    """Where this process writes `subdir`: model_dir on the chief, a private temp folder elsewhere.

    Multi-worker checkpointing needs every worker to save (the save is collective), but
    only the chief's copy may land in model_dir.
    """
    if is_chief(strategy):
        return os.path.join(model_dir, subdir)
    resolver = strategy.cluster_resolver
    tag = hashlib.sha1(os.path.abspath(model_dir).encode()).hexdigest()[:10]
    return os.path.join(tempfile.gettempdir(), f"agetf-{tag}-{resolver.task_type}_{resolver.task_id}",
                        subdir)
