"""Start a tf.data service dispatcher or worker, so training input preprocessing can run elsewhere.

    python -m agetf.data_service --port 5050                                 # dispatcher
    python -m agetf.data_service --port 5051 --dispatcher_address HOST:5050  # each CPU worker
    python -m agetf.train ... --tf_data_service=grpc://HOST:5050

Workers need the dataset's files at the same paths as the trainer (shared storage).
The servers themselves: agetf.data.service_servers.
"""

import sys

from absl import app, flags

from agetf import UsageError
from agetf.common import flagfiles
from agetf.data.service_servers import ServiceConfig, serve

FLAGS = flags.FLAGS


def define_flags():
    """Defines this entry point's flags, each default a ServiceConfig field's; only when run as
    a program, so importing this module (tests, other tools) leaves absl's global flags alone."""
    defaults = ServiceConfig
    flags.DEFINE_integer("port", defaults.port, "Port to serve on (0: any free port).")
    flags.DEFINE_string("dispatcher_address", defaults.dispatcher_address, "HOST:PORT of the "
                        "dispatcher; given: start a worker, else a dispatcher.")
    flags.DEFINE_string("worker_host", defaults.worker_host, "Host name the dispatcher tells "
                        "consumers to reach this worker at.")
    flags.DEFINE_string("work_dir", defaults.work_dir, "Dispatcher journal folder, so a restarted "
                        "dispatcher keeps its jobs; default none.")


def build_config():
    """Turns the flags into a ServiceConfig; raises UsageError for bad values."""
    return ServiceConfig(port=FLAGS.port, dispatcher_address=FLAGS.dispatcher_address,
                         worker_host=FLAGS.worker_host, work_dir=FLAGS.work_dir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = build_config()
    except UsageError as error:
        sys.exit(f"agetf.data_service: error: {error}")
    serve(config)


def console_main():
    """Console entry point (agetf-data-service), as python -m agetf.data_service."""
    define_flags()
    flagfiles.exit_on_bad_flagfile(sys.argv, "agetf.data_service", FLAGS)
    app.run(main)


if __name__ == "__main__":
    console_main()
