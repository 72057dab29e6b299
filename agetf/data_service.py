"""Start a tf.data service dispatcher or worker, so training input preprocessing can run elsewhere.

    python -m agetf.data_service --port 5050                                   # dispatcher
    python -m agetf.data_service --port 5051 --dispatcher_address HOST:5050    # a worker (one per CPU machine)
    python -m agetf.train ... --tf_data_service=grpc://HOST:5050

Workers need the dataset's files at the same paths as the trainer (shared storage).
"""

import os
import sys

import tensorflow as tf
from absl import app, flags

FLAGS = flags.FLAGS


def start_dispatcher(port=0, work_dir=None):
    """A started DispatchServer; its address is `server.target` (grpc://localhost:PORT)."""
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=bool(work_dir))
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher_address, port=0, worker_host="localhost"):
    """A started WorkerServer registered with the dispatcher at HOST:PORT (grpc:// optional)."""
    address = dispatcher_address.removeprefix("grpc://")
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=address, port=port,
        worker_address=f"{worker_host}:{port}" if port else None)
    return tf.data.experimental.service.WorkerServer(config)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.dispatcher_address:
        server = start_worker(FLAGS.dispatcher_address, FLAGS.port, FLAGS.worker_host)
        print(f"tf.data service worker on port {FLAGS.port}, dispatcher {FLAGS.dispatcher_address}",
              flush=True)
    else:
        server = start_dispatcher(FLAGS.port, FLAGS.work_dir)
        port = server.target.rsplit(":", 1)[1]  # the real one, also when --port=0
        print(f"tf.data service dispatcher at {server.target}; train with "
              f"--tf_data_service=grpc://{os.uname().nodename}:{port}", flush=True)
    server.join()


def define_flags():
    """Defines this entry point's flags; only when run as a program, so importing the
    start_* functions (tests, other tools) leaves absl's global flags alone."""
    flags.DEFINE_integer("port", 5050, "Port to serve on (0: any free port).")
    flags.DEFINE_string("dispatcher_address", None, "HOST:PORT of the dispatcher; given: start a "
                        "worker, else a dispatcher.")
    flags.DEFINE_string("worker_host", "localhost", "Host name the dispatcher tells consumers to "
                        "reach this worker at.")
    flags.DEFINE_string("work_dir", None, "Dispatcher journal folder, so a restarted dispatcher "
                        "keeps its jobs; default none.")


def console_main():
    """Console entry point (agetf-data-service), as python -m agetf.data_service."""
    from agetf.common import flagfiles

    define_flags()
    flagfiles.exit_on_bad_flagfile(sys.argv, "agetf.data_service", FLAGS)
    app.run(main)


if __name__ == "__main__":
    console_main()
