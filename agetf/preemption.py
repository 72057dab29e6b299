"""Stopping cleanly on SIGTERM (what Kubernetes, Slurm and spot VMs send before a kill).

The handler only sets a flag; the training loop reads it between host calls, saves a
checkpoint and raises `Preempted`, so no step is cut in half and the rerun resumes.
"""

import signal
import threading

import tensorflow as tf

EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a SIGTERM death: 143


class Preempted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint."""


class TerminationWatcher:
    """Installs a SIGTERM handler for the `with` block; `requested()` says whether one came."""

    def __init__(self, strategy=None):
        self.strategy = strategy
        self._event = threading.Event()
        self._previous = None

    def __enter__(self):
        # Signal handlers can only be installed from the main thread.
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
        return False

    def _handle(self, signum, frame):
        self._event.set()

    def request(self):
        """Marks termination as requested (what the signal handler does)."""
        self._event.set()

    def requested(self):
        """True when this process (or, under multi-worker, any worker) got SIGTERM.

        Under MultiWorkerMirroredStrategy every worker must save the checkpoint together
        (the save is collective), so the flag is agreed on with an all-reduce.
        """
        local = self._event.is_set()
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return local
        flag = self.strategy.experimental_distribute_values_from_function(
            lambda _: tf.constant(int(local), tf.int32))
        return bool(self.strategy.reduce(tf.distribute.ReduceOp.SUM, flag, axis=None).numpy() > 0)
