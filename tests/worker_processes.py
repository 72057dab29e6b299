"""Worker processes in tests: free loopback ports, and reading a process's output with deadlines."""

import queue
import socket
import threading
import time


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class OutputReader:
    """Collects a process's output lines on a thread, so a test can wait for one with a deadline."""

    def __init__(self, proc):
        self.lines, self._queue = [], queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc):
        for line in proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text, timeout):
        """Returns once a line containing `text` arrived; fails at the deadline or at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no {text!r} in time:\n" + "".join(self.lines)[-3000:])
            self.lines.append(line)
            if text in line:
                return

    def rest(self):
        self._thread.join()
        while (line := self._queue.get()) is not None:
            self.lines.append(line)
        return "".join(self.lines)
