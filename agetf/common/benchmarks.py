"""What every benchmark in scripts/ prints: a table, then its result as one JSON line,
stamped with the machine it ran on (CPUs, processor, versions, load).

A benchmark is a script, never a test that asserts a time: people read its table, and
tests and tools read the JSON on its last line.
"""

import dataclasses
import json
import os
import platform
import resource
from typing import Callable, Union


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a table: its title, its width and alignment ("<" left, ">" right), the
    value a row gives it (a key or index of the row, or a function of it) and the format spec
    of that value (",.0f"); `note` is a second header line's cell, e.g. "(median)"."""

    title: str
    width: int
    value: Union[str, int, Callable]
    format: str = ""
    align: str = ">"
    note: str = ""

    def cell(self, row):
        value = self.value(row) if callable(self.value) else row[self.value]
        return f"{value:{self.align}{self.width}{self.format}}"


def table_lines(columns, rows):
    """The header line (a line of notes under it where a column has one), then a line per row;
    cells are separated by one space."""
    lines = [" ".join(f"{c.title:{c.align}{c.width}}" for c in columns)]
    if any(c.note for c in columns):
        lines.append(" ".join(f"{c.note:{c.align}{c.width}}" for c in columns).rstrip())
    lines += [" ".join(c.cell(row) for c in columns) for row in rows]
    return lines


def print_table(columns, rows):
    """Prints table_lines(columns, rows)."""
    print("\n".join(table_lines(columns, rows)))


def machine_info(*, with_platform=True, with_tensorflow=True):
    """The machine a measurement ran on: its CPUs, processor, Python and, as asked, operating
    system and TensorFlow version (imported here: call it where TensorFlow is loaded already,
    or where its import costs nothing measured)."""
    info = {"cpu_count": os.cpu_count()}
    if with_platform:
        info["platform"] = platform.platform()
    info["processor"] = platform.processor() or platform.machine()
    info["python"] = platform.python_version()
    if with_tensorflow:
        import tensorflow as tf  # the TF-free benchmarks (the converter's) must not pay for it

        info["tensorflow"] = tf.__version__
    return info


def load_average():
    """The 1, 5 and 15 minute load averages, to two decimals: how busy the machine was."""
    return [round(x, 2) for x in os.getloadavg()]


def max_rss_mib():
    """This process's peak resident memory so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_json(result):
    """Prints the result as one JSON line: the last line of a benchmark's output."""
    print(json.dumps(result))
