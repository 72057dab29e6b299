"""Progress bars for long loops, drawn only on a terminal.

A bar redraws itself with carriage returns; in a log file or a CI log those pile up into
one unreadable line, so off a terminal there is no bar and the output is what it was.
"""

import sys

from tqdm import tqdm


def on_terminal(stream):
    """Whether `stream` is an interactive terminal (a notebook counts: it draws bars too)."""
    try:
        return stream.isatty() or "ipykernel" in sys.modules
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def shown(show=None):
    """Whether a bar is drawn: `show`, or (None) whether stderr is a terminal."""
    return on_terminal(sys.stderr) if show is None else bool(show)


def progress_bar(total, description, unit, show=None):
    """A tqdm bar on stderr for `total` units (None: unknown), drawn when shown(show). Use it
    as a context manager and call `update(n)`; it leaves no line behind."""
    return tqdm(total=total, desc=description, unit=unit, disable=not shown(show), leave=False,
                file=sys.stderr, dynamic_ncols=True)


class CountingBar:
    """A progress_bar that also counts the units it was told of, drawn or not (a hidden tqdm bar
    counts nothing): `done` of `total`. `enabled` False (e.g. --noprogress) never draws it;
    True draws it on a terminal only."""

    def __init__(self, description, total, enabled=True, unit="images"):
        self.done, self.total = 0, total
        self.bar = progress_bar(total, description, unit, show=None if enabled else False)

    def add(self, count):
        self.done += count
        self.bar.update(count)

    def close(self):
        self.bar.close()
