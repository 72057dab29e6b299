"""The locked whole-folder swap (agetf.common.folder_swap): the named entries are replaced in
one step, the folder's others stay, the in-place fallback and an interrupted swap end the same,
and one writer holds the folder at a time."""

import errno
import os

import pytest

from agetf.common import folder_swap, run_lock

LOCK = ".writer.lock"


def replaces(entry):
    return entry.startswith("data")


def make_folder(path):
    """A folder holding old contents (data-*), a file and a folder of its own, and its lock."""
    (path / "mine").mkdir(parents=True)
    (path / "mine" / "kept.txt").write_text("kept")
    (path / "notes.md").write_text("mine")
    (path / "data-1").write_text("old 1")
    (path / "data-2").write_text("old 2")
    lock = folder_swap.hold(str(path), LOCK, "writing")
    staged = folder_swap.start_staging(str(path))
    for name in ("data-1", "data-3"):
        with open(os.path.join(staged, name), "w") as f:
            f.write(f"new {name[-1]}")
    return lock, staged


def contents(path):
    return {entry: (path / entry).read_text() for entry in os.listdir(path)
            if (path / entry).is_file() and entry != LOCK}


NEW = {"data-1": "new 1", "data-3": "new 3", "notes.md": "mine"}


def test_the_new_contents_replace_only_the_named_entries_in_one_swap(tmp_path):
    folder = tmp_path / "out"
    lock, staged = make_folder(folder)
    inode = os.stat(folder / LOCK).st_ino
    folder_swap.swap_in(staged, str(folder), replaces)
    assert contents(folder) == NEW
    assert (folder / "mine" / "kept.txt").read_text() == "kept"
    assert os.stat(folder / LOCK).st_ino == inode  # the lock held is still the folder's lock
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing left beside it
    assert folder_swap.hold(str(folder), LOCK, "writing") is None
    lock.release()


def test_where_folders_cannot_swap_the_files_are_replaced_in_place(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "out"
    lock, staged = make_folder(folder)

    def cannot(path_a, path_b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(folder_swap, "exchange", cannot)
    folder_swap.swap_in(staged, str(folder), replaces, order=lambda entry: entry == "data-1")
    assert contents(folder) == NEW and (folder / "mine" / "kept.txt").exists()
    assert "cannot swap" in capsys.readouterr().err and not os.path.exists(staged)
    lock.release()


def test_a_swap_killed_halfway_is_finished_by_the_next_writer(tmp_path):
    folder = tmp_path / "out"
    lock, staged = make_folder(folder)
    # Killed right after the exchange: the old contents, with the folder's own folder, wait beside.
    swap = folder_swap.swap_path(str(folder))
    os.rename(staged, swap)
    folder_swap.exchange(swap, str(folder))
    assert not (folder / "mine").exists()
    folder_swap.finish_interrupted_swap(str(folder), replaces)
    assert (folder / "mine" / "kept.txt").read_text() == "kept"
    assert not os.path.exists(swap)
    lock.release()


def test_one_writer_at_a_time_and_its_pid_is_named(tmp_path):
    folder = tmp_path / "new" / "out"
    lock = folder_swap.hold(str(folder), LOCK, "writing")
    assert folder_swap.hold(str(folder), LOCK, "writing") is None
    description, pid = run_lock.holder(str(folder / LOCK))
    assert pid == str(os.getpid()) and "writing" in description
    lock.release()
    folder_swap.hold(str(folder), LOCK, "writing").release()
    folder_swap.start_staging(str(folder))
    folder_swap.remove_created(str(folder), LOCK)
    assert not folder.exists()


def test_a_folder_that_cannot_be_made_is_an_os_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):
        folder_swap.hold(str(tmp_path / "file" / "out"), LOCK, "writing")
