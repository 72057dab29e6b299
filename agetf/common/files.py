"""Files written whole, and a full disk said in one line.

Every file agetf writes for a reader to find (a run's JSON, CSV, plots and .keras models,
TFLite models, predict's --output, the converter's report and split file) goes through
`atomic_path`: it is written under a temporary name in its own folder and renamed onto its
path in one step (os.replace), so a reader, or a process killed at any moment, sees the old
file or the new one, never part of one. A failed write removes its temporary file and leaves
the old file as it was. `write_bytes`, `write_text` and `write_json` also flush the data to
the disk before the rename.

Plain Python, so that the converter's worker processes can import it without TensorFlow.
"""

import contextlib
import errno
import json
import os
import secrets

TEMPORARY_PREFIX = ".tmp-"  # hidden, and what a check for a left-over temporary file looks for


class DiskFullError(OSError):
    """A write failed because the disk (or the user's quota) is full; the message names the path."""

    def __init__(self, message):
        super().__init__(errno.ENOSPC, message)

    def __str__(self):
        return self.strerror  # the one line, without OSError's "[Errno 28]"


_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error):
    """Whether an OSError (or TensorFlow's error text) says the disk or the quota is full."""
    return (getattr(error, "errno", None) in _FULL or "No space left" in str(error)
            or "quota exceeded" in str(error).lower())


def disk_full_error(path, what=None, detail=None, *, fix):
    """The one-line DiskFullError for a failed write of `path` (`what`: the thing written,
    default its file name; `detail`: the error's own words; `fix`: what the user can do)."""
    what = what or os.path.basename(path)
    detail = f"; {detail}" if detail else ""
    return DiskFullError(f"the disk holding {path} is full (no space left while writing "
                         f"{what}{detail}); {fix}")


@contextlib.contextmanager
def disk_full_named(path, *, fix):
    """Turns a full disk inside the block into disk_full_error(path, fix=fix); any other
    error passes unchanged."""
    try:
        yield
    except OSError as error:
        if isinstance(error, DiskFullError) or not is_disk_full(error):
            raise
        raise disk_full_error(path, fix=fix) from error


def _remove_quietly(path):
    with contextlib.suppress(OSError):
        os.remove(path)


def _reserve_temporary(folder, path):
    """Creates an empty, unused file beside `path` (permissions as for any new file) and
    returns its name; the file's extension is kept, for writers that choose a format by it."""
    extension = os.path.splitext(path)[1]
    while True:
        temporary = os.path.join(folder, f"{TEMPORARY_PREFIX}{os.getpid()}-"
                                         f"{secrets.token_hex(4)}{extension}")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path in `path`'s folder (created if missing) to write the file to;
    when the block ends, the file is renamed onto `path` in one step, and when it raises
    (KeyboardInterrupt included), the temporary file is removed and `path` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = _reserve_temporary(folder, path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        _remove_quietly(temporary)
        raise


def write_bytes(path, data):
    """Writes `data` to `path` atomically (atomic_path), flushed to the disk before the rename."""
    with atomic_path(path) as temporary, open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text(path, text):
    """Writes `text` as UTF-8 to `path` atomically, flushed to the disk before the rename."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path, data):
    """Writes `data` as indented JSON with sorted keys and a final newline, atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path):
    """The parsed JSON at `path`, or None when there is no such file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
