"""agetf.common.files: a file is replaced whole or not at all, and a full disk is one line."""

import errno
import os

import pytest

from agetf.common import files


def leftovers(folder):
    return [name for name in os.listdir(folder) if name.startswith(files.TEMPORARY_PREFIX)]


def test_atomic_path_renames_the_written_file_onto_the_path(tmp_path):
    path = tmp_path / "new" / "model.keras"  # the folder does not exist yet
    with files.atomic_path(str(path)) as temporary:
        assert os.path.dirname(temporary) == str(path.parent)
        assert temporary.endswith(".keras")  # writers that pick a format by the extension
        assert not path.exists()  # nothing at the path until the block ends
        with open(temporary, "w") as f:
            f.write("new")
    assert path.read_text() == "new"
    assert leftovers(path.parent) == []


def test_an_exception_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "history.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with files.atomic_path(str(path)) as temporary:
            with open(temporary, "w") as f:
                f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_two_writes_at_once_get_their_own_temporary_files(tmp_path):
    path = str(tmp_path / "a.txt")
    with files.atomic_path(path) as first, files.atomic_path(path) as second:
        assert first != second
        for name, text in ((first, "first"), (second, "second")):
            with open(name, "w") as f:
                f.write(text)
    assert open(path).read() == "first"  # the outer block ends last
    assert leftovers(tmp_path) == []


def test_write_bytes_text_and_json(tmp_path):
    files.write_bytes(str(tmp_path / "a.bin"), b"\x00\xff")
    files.write_text(str(tmp_path / "a.txt"), "ünïcode\n")
    files.write_json(str(tmp_path / "a.json"), {"b": 1, "a": [2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xff"
    assert (tmp_path / "a.txt").read_bytes() == "ünïcode\n".encode("utf-8")
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert files.read_json(str(tmp_path / "a.json")) == {"a": [2], "b": 1}
    assert files.read_json(str(tmp_path / "missing.json")) is None


def test_a_full_disk_leaves_the_old_file_and_is_named_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    path.write_text("old")

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as raised:
        files.write_json(str(path), {"new": True})
    assert files.is_disk_full(raised.value)
    assert path.read_text() == "old" and leftovers(tmp_path) == []
    with pytest.raises(files.DiskFullError) as named:
        with files.disk_full_named(str(path), fix="free some space"):
            files.write_json(str(path), {"new": True})
    assert str(named.value) == (f"the disk holding {path} is full (no space left while writing "
                                "x.json); free some space")
    assert path.read_text() == "old" and leftovers(tmp_path) == []


def test_other_errors_pass_unchanged(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with files.disk_full_named(str(tmp_path / "x"), fix="free some space"):
            1 / 0
    error = OSError(errno.EACCES, "Permission denied")
    assert not files.is_disk_full(error)
    assert files.is_disk_full(RuntimeError("x; No space left on device"))
    assert os.listdir(tmp_path) == []
