"""One conversion per output folder, and a dataset that is never lost, with real processes: a
second conversion into a folder in use is refused in one line, a conversion killed at any moment
leaves the previous dataset or the new one whole and the next one is not refused, and the
progress bar is drawn on a terminal only.
"""

import io
import os
import select
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from agetf.common import folder_swap, progress
from agetf.data import conversion, convert_config, dataset_files, input_pipeline, synthetic

pytestmark = pytest.mark.slow  # end-to-end: real processes and runs (pytest.ini)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
TIMEOUT_S = 300
SETTINGS = ["--workers=1", "--split_ratios=1,0,0", "--min_shards=1"]

# agetf.convert with one moment planted. "pause": it prints "paused" and waits for a line on
# stdin before writing the TFDS metadata (the new shards written, the old dataset in place).
# "kill=0": it sends itself SIGKILL halfway through the images; "kill=N": at the N-th change
# to the file system (a remove, rename, link, folder swap or tree removal, each counted once)
# after the last image is encoded.
_AT_MOMENT = """
import os, runpy, shutil, signal, sys
from agetf.common import folder_swap, progress
from agetf.data import shard_writer
moment = sys.argv.pop(1)

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if moment == "pause":
    write_metadata = shard_writer.write_metadata
    def pause_then_write(*args, **kwargs):
        print("paused", flush=True)
        sys.stdin.readline()
        return write_metadata(*args, **kwargs)
    shard_writer.write_metadata = pause_then_write
else:
    doomed = int(moment.split("=")[1])
    state = {"encoded": False, "changes": 0, "inside": False}
    add = progress.CountingBar.add
    def add_then_watch(self, count):
        add(self, count)
        if doomed == 0 and 2 * self.done >= self.total:
            die()
        state["encoded"] = self.done >= self.total
    progress.CountingBar.add = add_then_watch
    def counted(change):
        def call(*args, **kwargs):
            if not state["encoded"] or state["inside"]:
                return change(*args, **kwargs)
            state["changes"] += 1
            if state["changes"] == doomed:
                die()
            state["inside"] = True  # what a counted change does inside is not counted again
            try:
                return change(*args, **kwargs)
            finally:
                state["inside"] = False
        return call
    for name in ("remove", "unlink", "rename", "replace", "link", "rmdir"):
        setattr(os, name, counted(getattr(os, name)))
    shutil.rmtree = counted(shutil.rmtree)
    folder_swap.exchange = counted(folder_swap.exchange)
sys.argv[0] = "agetf.convert"
runpy.run_module("agetf.convert", run_name="__main__", alter_sys=True)
"""


def make_faces(folder, count, seed):
    synthetic.write_synthetic_faces(str(folder), count=count, seed=seed, size=32)
    return str(folder)


def convert_args(faces, out):
    return [f"--input_dir={faces}", f"--output_dir={out}", "--overwrite", *SETTINGS]


def records_in(out):
    """The number of faces of the dataset in `out`, checked whole: TFDS's metadata, the shards
    the input pipeline finds and the conversion report agree on every split."""
    import tensorflow_datasets as tfds

    report = input_pipeline.read_report(str(out))
    builder = tfds.builder_from_directory(str(out))
    for split in dataset_files.SPLITS:
        count = report["counts"][split]
        files = tf.io.gfile.glob(dataset_files.shard_pattern(str(out), split))
        assert sum(1 for _ in tf.data.TFRecordDataset(files)) == count, split
        assert (builder.info.splits[split].num_examples if count else 0) == count, split
    assert sum(1 for _ in builder.as_dataset(split="train")) == report["counts"]["train"]
    return report["total_kept"]


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip()]


def test_a_second_conversion_into_a_folder_in_use_is_refused_in_one_line(tmp_path):
    old, new = make_faces(tmp_path / "old", 4, seed=1), make_faces(tmp_path / "new", 6, seed=2)
    out = tmp_path / "out"
    conversion.convert(convert_config.ConvertConfig(
        input_dirs=[old], output_dir=str(out), min_shards=1, workers=1, show_progress=False,
        split_ratios=(1.0, 0.0, 0.0)))
    with open(tmp_path / "first.err", "w") as first_err:
        first = subprocess.Popen([sys.executable, "-c", _AT_MOMENT, "pause",
                                  *convert_args(new, out)],
                                 env=ENV, cwd=REPO, text=True, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=first_err)
    try:
        assert select.select([first.stdout], [], [], TIMEOUT_S)[0], "the first never paused"
        assert first.stdout.readline() == "paused\n", (tmp_path / "first.err").read_text()[-3000:]

        second = subprocess.run([sys.executable, "scripts/make_tfrecords", *convert_args(old, out)],
                                env=ENV, cwd=REPO, text=True, capture_output=True,
                                timeout=TIMEOUT_S)
        assert second.returncode == 1
        lines = error_lines(second.stderr)
        assert len(lines) == 1, second.stderr[-3000:]
        assert lines[0].startswith(f"make_tfrecords: error: output directory {out} is in use by "
                                   f"another conversion (pid {first.pid} on host "
                                   f"{socket.gethostname()}, converting since "), lines[0]
        assert f"kill {first.pid} on its host" in lines[0] and "another --output_dir" in lines[0]
        assert records_in(out) == 4  # the first has not swapped yet: the old dataset, whole

        first.stdin.write("\n")
        first.stdin.close()
        assert first.wait(timeout=TIMEOUT_S) == 0, (tmp_path / "first.err").read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert records_in(out) == 6


def test_a_conversion_killed_at_any_moment_leaves_a_whole_dataset_and_no_stuck_lock(tmp_path):
    old, new = make_faces(tmp_path / "old", 4, seed=1), make_faces(tmp_path / "new", 6, seed=2)
    out = tmp_path / "out"
    conversion.convert(convert_config.ConvertConfig(
        input_dirs=[old], output_dir=str(out), min_shards=1, workers=1, show_progress=False,
        split_ratios=(1.0, 0.0, 0.0)))
    # The output folder's own files and folders go with it, whatever happens.
    (out / "notes.md").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "kept.txt").write_text("kept")

    # Killed halfway through the images, then at each change to the file system after them,
    # until a run has nothing left to be killed at. Each run takes the lock a killed one held.
    killed_at = []
    for doomed in range(40):
        result = subprocess.run([sys.executable, "-c", _AT_MOMENT, f"kill={doomed}",
                                 *convert_args(new, out)], env=ENV, cwd=REPO, text=True,
                                capture_output=True, timeout=TIMEOUT_S)
        if result.returncode == 0:
            break
        assert result.returncode == -9, (doomed, result.stderr[-3000:])
        killed_at.append(doomed)
        assert records_in(out) in (4, 6), doomed  # the old dataset or the new one, whole
        assert (out / "notes.md").read_text() == "mine"
    assert len(killed_at) >= 4, killed_at  # halfway, and the swap's steps

    assert records_in(out) == 6
    assert (out / "notes.md").read_text() == "mine"
    assert (out / "mine" / "kept.txt").read_text() == "kept"
    assert sorted(os.listdir(tmp_path)) == ["new", "old", "out"]  # nothing left beside it
    assert not (out / folder_swap.INCOMPLETE_DIR).exists()


def test_the_progress_bar_is_drawn_on_a_terminal_only(tmp_path, monkeypatch):
    faces, out = make_faces(tmp_path / "faces", 4, seed=3), tmp_path / "out"
    with open(tmp_path / "log.txt", "w") as log:
        result = subprocess.run([sys.executable, "scripts/make_tfrecords", "--progress",
                                 *convert_args(faces, out)], env=ENV, cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=log, timeout=TIMEOUT_S)
    assert result.returncode == 0, (tmp_path / "log.txt").read_text()[-3000:]
    assert "kept 4 images" in result.stdout
    assert b"\r" not in (tmp_path / "log.txt").read_bytes()  # bytes: text mode reads \r as \n

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress.CountingBar("converting", 2, enabled=False).add(2)  # --noprogress
    assert terminal.getvalue() == ""
    bar = progress.CountingBar("converting", 2, enabled=True)
    bar.add(1)
    bar.add(1)
    bar.close()
    text = terminal.getvalue()
    assert "\r" in text and "converting" in text and "/2" in text
