"""The tf.data service's servers: a dispatcher, and the workers that run training input
preprocessing for it (agetf.data.input_pipeline.distribute_through_service is the consumer).

Workers need the dataset's files at the same paths as the trainer (shared storage).
"""

import dataclasses
import os

from agetf import UsageError


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """One tf.data service server.

    Attributes:
      port: the port to serve on; 0: any free port.
      dispatcher_address: HOST:PORT (grpc:// optional) of the dispatcher; given: this is a
        worker, else the dispatcher.
      worker_host: the host name the dispatcher tells consumers to reach this worker at.
      work_dir: the dispatcher's journal folder, so a restarted dispatcher keeps its jobs;
        None: no journal.
    """

    port: int = 5050
    dispatcher_address: str | None = None
    worker_host: str = "localhost"
    work_dir: str | None = None

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port={self.port} must be in [0, 65535] (0: any free port)")


def start_dispatcher(port=0, work_dir=None):
    """A started DispatchServer; its address is `server.target` (grpc://localhost:PORT)."""
    import tensorflow as tf  # not at import: the driver's flag errors come before TensorFlow

    config = tf.data.experimental.service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=bool(work_dir))
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher_address, port=0, worker_host="localhost"):
    """A started WorkerServer registered with the dispatcher at HOST:PORT (grpc:// optional)."""
    import tensorflow as tf  # not at import: the driver's flag errors come before TensorFlow

    address = dispatcher_address.removeprefix("grpc://")
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=address, port=port,
        worker_address=f"{worker_host}:{port}" if port else None)
    return tf.data.experimental.service.WorkerServer(config)


def serve(config):
    """Starts the server `config` describes, says where it is, and serves until killed."""
    if config.dispatcher_address:
        server = start_worker(config.dispatcher_address, config.port, config.worker_host)
        print(f"tf.data service worker on port {config.port}, dispatcher "
              f"{config.dispatcher_address}", flush=True)
    else:
        server = start_dispatcher(config.port, config.work_dir)
        port = server.target.rsplit(":", 1)[1]  # the real one, also when --port=0
        print(f"tf.data service dispatcher at {server.target}; train with "
              f"--tf_data_service=grpc://{os.uname().nodename}:{port}", flush=True)
    server.join()
