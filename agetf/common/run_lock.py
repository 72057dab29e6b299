"""One process at a time per folder: an exclusive lock on a file in it (MODEL_DIR/run.lock for
training; the converter locks its --output_dir the same way, through `hold`).

`fcntl.flock` locks belong to the open file, so the kernel releases them when the process
dies, however it dies (kill -9 included): a killed run never leaves its model_dir locked.
The file stays behind between runs; only the lock on it matters. The holder writes its pid,
host and what it does into it, so that a refused run can say who holds the model_dir.
"""

import fcntl
import json
import os
import socket
import time

from agetf import UsageError

LOCK_FILE = "run.lock"


class RunLockedError(UsageError):
    """Another process is training (or evaluating) in the same model_dir."""


class RunLock:
    """Held while the object lives (or until `release`); the kernel frees it at process exit."""

    def __init__(self, fd, path):
        self._fd, self.path = fd, path

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the flock
            self._fd = None

    def __del__(self):
        self.release()


def _holder_description(path):
    """'pid 123 on host h, training since 2026-12-01 20:00:00', from what the holder wrote."""
    try:
        with open(path, encoding="utf-8") as f:
            holder = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder.get("pid"):
        return "a process that has not written its pid yet"
    since = holder.get("since")
    since = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
    return (f"pid {holder['pid']} on host {holder.get('host', '?')}, "
            f"{holder.get('purpose', 'running')}{since}")


def hold(path, purpose):
    """Takes the exclusive lock on the file `path` (created if missing) and writes this process
    (pid, host, purpose, since) into it: a RunLock; None while another live process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                         "since": time.time()}) + "\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    return RunLock(fd, path)


def holder(path):
    """(who holds the lock file `path`, as _holder_description says it; their pid or "PID")."""
    description = _holder_description(path)
    return description, description.split()[1] if description.startswith("pid ") else "PID"


def acquire(model_dir, purpose):
    """Takes model_dir's lock for `purpose` ("training", "evaluation (--load)"); a RunLockedError
    naming the holder (pid, host) and the fix when another live process holds it."""
    path = os.path.join(model_dir, LOCK_FILE)
    lock = hold(path, purpose)
    if lock is None:
        description, pid = holder(path)
        raise RunLockedError(
            f"--model_dir={model_dir} is in use by another agetf.train ({description}; lock file "
            f"{path}); wait for it to finish or stop it (kill {pid} on its host; a rerun of its "
            "command resumes it), or use another --model_dir")
    return lock
