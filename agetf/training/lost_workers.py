"""Turning a lost worker under MultiWorkerMirroredStrategy into one line that says what to do.

When a worker dies, TensorFlow aborts the collectives of the others: a call to the dead
peer fails on a closed socket, the coordination service on the chief notices missing
heartbeats (about 10 s), a worker loses the chief's coordination service, or a collective
outlives --collective_timeout (a peer alive but stuck). Each arrives as an OpError with
a long, varying message; the survivors should stop with a short one and a nonzero status.
"""

import re

import tensorflow as tf

# What an aborted collective raises; other OpErrors keep their own handling.
_LOST_WORKER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                       tf.errors.AbortedError, tf.errors.CancelledError)
_TASK = re.compile(r"/job:\w+/replica:\d+/task:\d+")


def is_lost_worker(error):
    """True for the errors that a dead, unreachable or stuck peer causes in a collective."""
    return (isinstance(error, _LOST_WORKER_ERRORS)
            or "Collective ops is aborted" in (getattr(error, "message", None) or str(error)))


def _reason(message, collective_timeout):
    tasks = ", ".join(dict.fromkeys(_TASK.findall(message)))
    if "timed out" in message:
        return (f"a collective waited longer than --collective_timeout={collective_timeout:g}s "
                "for another worker")
    if "stopped sending heartbeats" in message:
        return f"{tasks or 'a worker'} stopped sending heartbeats"
    if "coordination service" in message.lower():
        return f"the chief's coordination service{' at ' + tasks if tasks else ''} is unreachable"
    aborted = re.search(r"Collective ops is aborted by: (.+)", message)
    line = aborted.group(1) if aborted else next(
        (candidate for candidate in message.splitlines()
         if candidate.strip() and "Graph execution error" not in candidate), "")
    return f"{line.strip()[:120]}" + (f" talking to {tasks}" if tasks else "")


def lost_worker_message(error, model_dir, collective_timeout):
    """One line for a survivor: what happened, and that a restart of every worker resumes."""
    reason = _reason(getattr(error, "message", None) or str(error), collective_timeout)
    return (f"lost contact with another worker ({reason}); the job cannot go on without it. "
            f"Restart every worker with the same command to resume from the last checkpoint in "
            f"{model_dir.rstrip('/')}/checkpoints")


def workers_never_came_message(missing, timeout):
    """One line for a worker that waited `timeout` seconds at start-up for other workers;
    `missing`: [(task, address)] of those whose address still accepts no connection."""
    named = ", ".join(f"{task} at {address}" for task, address in missing)
    return (f"{named} never came (nothing listens there) within --worker_startup_timeout="
            f"{timeout:g}s; the job cannot start without {'it' if len(missing) == 1 else 'them'}. "
            "Start every worker TF_CONFIG names with the same command (a pod not scheduled? a "
            "wrong address or port?), or raise --worker_startup_timeout")
