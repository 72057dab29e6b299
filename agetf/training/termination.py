"""Stopping cleanly on SIGTERM (what Kubernetes, Slurm and spot VMs send before a kill).

During training the handler only sets a flag; the training loop reads it between host
calls, saves a checkpoint and raises `Preempted`, so no step is cut in half and the rerun
resumes. Outside training there is nothing to save and the process exits at once.

Python runs a signal handler only when the main thread is back in Python, which it may not
be for minutes while TensorFlow runs in C++ (tracing, a collective stuck on a peer). So
`exit_on_sigterm()` (called by agetf.train) has a thread act on it instead, woken through
signal.set_wakeup_fd, which Python's C-level handler writes whatever the main thread is
doing (TensorFlow releases the GIL while it runs ops). Creating MultiWorkerMirroredStrategy
replaces Python's SIGTERM handler with TensorFlow's own (C++), which swallows the signal:
`keep_sigterm()` takes it back. That creation also holds the GIL while it waits for the
other workers, which is why distribution.wait_for_workers waits for them first.
"""

import contextlib
import os
import signal
import socket
import sys
import threading
import time

import tensorflow as tf

EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a SIGTERM death: 143
# After SIGTERM in training, how long the loop gets to reach a host-call boundary and save
# before the process exits without a checkpoint: a bound for a loop stuck in C++ (a collective
# waiting on a stuck peer), above what a save takes (Kubernetes sends SIGKILL after its own
# grace period, 30 s by default).
TRAINING_GRACE_S = 60.0

_installed = []  # [the wakeup socket pair] once exit_on_sigterm() ran
_phases = []  # what the process is doing, innermost last: the exit line says it
_training = []  # TerminationWatchers in effect (they save a checkpoint first)


def _on_sigterm(signum, frame):
    """Python's handler outside training; the thread in _watch acts (this may never run)."""


def _watch(sock):
    while True:
        try:
            data = sock.recv(64)
        except InterruptedError:
            continue
        except OSError:
            return
        if signal.SIGTERM not in data:
            continue
        if _training:
            time.sleep(TRAINING_GRACE_S)
            reason = (f"did not reach a checkpoint within {TRAINING_GRACE_S:g}s of SIGTERM "
                      "(TensorFlow is blocked); rerun the same command to resume from the last "
                      "checkpoint")
        else:
            doing = f" while {_phases[-1]}" if _phases else ""
            reason = (f"terminated (SIGTERM){doing}; nothing to save, rerun the same command to "
                      "resume from the last checkpoint")
        _exit(f"agetf.train: {reason}", EXIT_CODE)


def _exit(line, code):
    try:
        sys.stdout.flush()
        print(line, file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def exit_on_sigterm():
    """From now on SIGTERM ends the process within seconds, whatever the main thread is doing
    (during training: once the loop saved a checkpoint, or after TRAINING_GRACE_S). Main
    thread only; once per process (later calls do what keep_sigterm does)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if not _installed:
        read, write = socket.socketpair()
        read.setblocking(True)
        write.setblocking(False)
        signal.set_wakeup_fd(write.fileno(), warn_on_full_buffer=False)
        _installed.append((read, write))
        threading.Thread(target=_watch, args=(read,), name="agetf-sigterm", daemon=True).start()
    keep_sigterm()


def keep_sigterm():
    """Takes SIGTERM back from a C++ handler (TensorFlow's) after exit_on_sigterm(). Main thread."""
    if not _installed or threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGTERM)
    # Python reports the handler it last installed, not TensorFlow's: install it again anyway.
    signal.signal(signal.SIGTERM, current if callable(current) else _on_sigterm)


@contextlib.contextmanager
def during(phase):
    """Names what the process is doing, for the line printed if SIGTERM stops it meanwhile."""
    _phases.append(phase)
    try:
        yield
    finally:
        _phases.remove(phase)


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
        _training.append(self)
        return self

    def __exit__(self, *exc):
        _training.remove(self)
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
