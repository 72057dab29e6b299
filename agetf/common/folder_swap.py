"""A folder's contents replaced whole, by one writer at a time.

The writer holds the folder's lock (`hold`: agetf.common.run_lock on a file in it) while it
builds the new contents in FOLDER/.incomplete (`start_staging`), then `swap_in` puts them in
place of the old in one step (Linux renameat2 RENAME_EXCHANGE), so the folder holds the old
contents or the new ones at every moment, a kill -9 included. Only the entries a `replaces`
predicate names are replaced; the folder's other files and folders stay. The folder being
swapped waits beside it as PARENT/.NAME.agetf-swap; only a writer killed during the swap
leaves it, and the next writer's `finish_interrupted_swap` removes it.

Plain Python (the converter's worker processes import agetf.data without TensorFlow).
"""

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import sys

from agetf.common import run_lock

INCOMPLETE_DIR = ".incomplete"  # the new contents are built here, then swapped in
SWAP_SUFFIX = ".agetf-swap"

_AT_FDCWD = -100  # Linux's "relative to the working directory"
_RENAME_EXCHANGE = 2  # linux/fs.h


def hold(folder, lock_name, purpose):
    """Creates `folder` if needed and takes the lock on FOLDER/lock_name (run_lock.hold).

    Returns:
      The RunLock, or None while another live process holds it (run_lock.holder says who).

    Raises:
      OSError: the folder cannot be created, or the lock file written.
    """
    os.makedirs(folder, exist_ok=True)
    return run_lock.hold(os.path.join(folder, lock_name), purpose)


def start_staging(folder):
    """A fresh FOLDER/.incomplete for the new contents (an interrupted run's is removed);
    returns its path."""
    staged = os.path.join(folder, INCOMPLETE_DIR)
    if os.path.isdir(staged):
        shutil.rmtree(staged)
    os.makedirs(staged)
    return staged


def swap_path(folder):
    """PARENT/.NAME.agetf-swap, where the folder being swapped with FOLDER waits."""
    parent, name = os.path.split(folder)
    return os.path.join(parent, f".{name}{SWAP_SUFFIX}")


def exchange(path_a, path_b):
    """Swaps two folders in one step (Linux renameat2 RENAME_EXCHANGE); OSError where the
    system or the file system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available on this system")
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(path_a), _AT_FDCWD, os.fsencode(path_b), _RENAME_EXCHANGE):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path_a)


def swap_in(staged, folder, replaces, order=None):
    """Puts the complete contents built in `staged` (FOLDER/.incomplete) in place of the
    folder's in one step: a kill at any moment leaves the old contents or the new ones, whole.

    The staged folder gets hard links to the folder's other files, the lock file among them
    (so the lock held stays the lock of the folder), moves beside it and is swapped with it
    (`exchange`); the folder's other folders then move into the new one, and the old one is
    deleted. Where the file system cannot swap folders (not Linux, a mount point, a parent
    folder this user cannot write), the entries are replaced in place, with a warning.

    Args:
      staged: the folder holding the new contents, inside `folder`.
      folder: the folder whose contents are replaced.
      replaces: entry name -> whether it is one the new contents replace (else it stays).
      order: sort key of the staged entries for the in-place fallback, which moves them one
        by one: what marks the contents complete should sort last. None: by name.
    """
    swap = swap_path(folder)
    folders = []
    try:
        for entry in os.listdir(folder):
            path = os.path.join(folder, entry)
            if entry == INCOMPLETE_DIR or replaces(entry):
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                folders.append(entry)
            else:
                os.link(path, os.path.join(staged, entry), follow_symlinks=False)
        os.chmod(staged, stat.S_IMODE(os.stat(folder).st_mode))
        os.rename(staged, swap)
    except OSError as error:
        return _replace_in_place(staged, folder, error, replaces, order)
    try:
        exchange(swap, folder)
    except OSError as error:
        os.rename(swap, staged)
        return _replace_in_place(staged, folder, error, replaces, order)
    for entry in folders:
        os.rename(os.path.join(swap, entry), os.path.join(folder, entry))
    shutil.rmtree(swap)


def _replace_in_place(staged, folder, error, replaces, order):
    """The fallback of swap_in: removes the replaced entries, then moves the new ones in, in
    `order` (a kill in between leaves incomplete contents until a rerun)."""
    print(f"warning: cannot swap the new contents into {folder} in one step ({error.strerror}); "
          "replacing its files in place", file=sys.stderr, flush=True)
    for entry in os.listdir(folder):
        if replaces(entry):
            os.remove(os.path.join(folder, entry))
    entries = [entry for entry in os.listdir(staged) if replaces(entry)]
    for entry in sorted(entries, key=order):
        os.replace(os.path.join(staged, entry), os.path.join(folder, entry))
    shutil.rmtree(staged)  # what is left are hard links to the folder's own files


def finish_interrupted_swap(folder, replaces):
    """After a writer killed inside swap_in: moves the folder's own folders back from the
    folder beside it, then deletes that folder (unused new contents, or the old ones)."""
    swap = swap_path(folder)
    if os.path.islink(swap) or not os.path.isdir(swap):
        return
    for entry in os.listdir(swap):
        path = os.path.join(swap, entry)
        if (os.path.isdir(path) and not os.path.islink(path) and not replaces(entry)
                and not os.path.lexists(os.path.join(folder, entry))):
            os.rename(path, os.path.join(folder, entry))
    shutil.rmtree(swap)


def remove_created(folder, lock_name):
    """Removes a folder a writer created and left without contents: its staging folder,
    its lock file, then the folder itself if nothing else is in it."""
    staged = os.path.join(folder, INCOMPLETE_DIR)
    if os.path.isdir(staged):
        shutil.rmtree(staged)
    with contextlib.suppress(OSError):
        os.remove(os.path.join(folder, lock_name))
        os.rmdir(folder)
