"""A manifest's usable rows, held compactly from the check of its paths until they are written.

IMDB-WIKI has about 500,000 faces, and one Python object per face (a Candidate, its labels and
its path strings) cost 0.86 KiB each. Here each accepted row is packed into an unnamed
temporary file; in memory stay two numbers a row (its writing-order hash and where it lies
in that file), and each distinct label, labels file and split once. Candidates are unpacked one
at a time, in writing order, as the workers take them. No TensorFlow.
"""

import array
import os
import struct
import tempfile

import numpy as np

from agetf.data import conversion_workers, record_encoder, split_files
from agetf.data.dataset_files import SPLITS

REASON_NO_FILE = "file not found"
REASON_DUPLICATE = "duplicate file"

_CHUNK = 4096  # rows' indices turned into Python ints at once
MISSING = -2  # add()'s size of a row whose file does not exist
# line, size (or MISSING), labels index, labels file index, split index; the path follows.
_ENTRY = struct.Struct("<qqIIB")


def _interned(value, values, index):
    """Index of `value` in the list `values`, appended on first sight ({value: index})."""
    found = index.get(value)
    if found is None:
        found = index[value] = len(values)
        values.append(value)
    return found


def file_size(path):
    """The bytes of the file at `path` (a link's target), 0 when it cannot be read."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class CandidateTable:
    """The rows of a manifest that name an existing file, in writing order once finished.

    Use: add() every row whose labels parsed, in manifest order; finish() (duplicates and
    missing files become skipped entries); then iterate the conversion_workers.Candidates;
    close() (or `with`) removes the temporary file.
    """

    def __init__(self, root):
        self.root = root  # the manifest's paths are relative to it
        self._spill = tempfile.TemporaryFile(prefix="agetf_candidates_")
        self._end = 0
        self._hashes = array.array("d")  # split_files.name_hash(path, "order") per row
        self._offsets = array.array("Q", [0])  # row i lies at [offsets[i], offsets[i + 1])
        self._labels, self._label_index = [], {}
        self._files, self._file_index = [], {}
        self._missing = []  # indices of rows whose file does not exist
        self._order = self._fd = None
        self.counts, self.sizes = dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0)

    def add(self, relative, labels, split, labels_file, line, size, order_hash=None):
        """One row whose labels parsed.

        Args:
          relative: its normalized path under root (the records' file name).
          labels: its names.FaceLabels.
          split: its split name.
          labels_file, line: where the row is, for the report.
          size: the file's bytes; None for a link (its target is measured); MISSING.
          order_hash: split_files.name_hash(relative, "order") where already computed.
        """
        if size is None:
            size = file_size(os.path.join(self.root, relative))
        if size != MISSING:
            self.counts[split] += 1
            self.sizes[split] += size
        else:
            self._missing.append(len(self._hashes))
        entry = _ENTRY.pack(line, size, _interned(labels, self._labels, self._label_index),
                            _interned(labels_file, self._files, self._file_index),
                            SPLITS.index(split)) + relative.encode("utf-8", "surrogateescape")
        self._spill.write(entry)
        self._end += len(entry)
        self._offsets.append(self._end)
        self._hashes.append(split_files.name_hash(relative, "order") if order_hash is None
                            else order_hash)

    def _entry(self, index):
        # pread, not mmap: mapped pages would count in this process's resident memory.
        start = self._offsets[index]
        data = os.pread(self._fd, self._offsets[index + 1] - start, start)
        line, size, label, labels_file, split = _ENTRY.unpack_from(data)
        relative = data[_ENTRY.size:].decode("utf-8", "surrogateescape")
        return relative, self._labels[label], SPLITS[split], (self._files[labels_file], line), size

    def finish(self):
        """Puts the rows in writing order (conversion.order_for_writing's: the stable sort of
        their "order" hashes) and leaves out repeated paths (the first row is kept) and
        missing files. Returns their skipped entries: [(path, reason, labels file, line)]."""
        self._spill.flush()
        self._fd = self._spill.fileno()
        hashes = np.frombuffer(self._hashes, dtype=np.float64)
        order = np.argsort(hashes, kind="stable")
        # One path's rows share a hash, so they are neighbours here, in manifest order.
        ordered = hashes[order]
        tied = np.flatnonzero(ordered[1:] == ordered[:-1])
        del ordered
        dropped, skipped = set(), []
        seen = {}  # {path: True} among the rows of one run of equal hashes
        for position, index in enumerate(order[tied + 1].tolist()):
            if position == 0 or tied[position] != tied[position - 1] + 1:
                seen = {self._entry(int(order[tied[position]]))[0]: True}
            relative, _, split, where, size = self._entry(index)
            if relative not in seen:
                seen[relative] = True
                continue
            dropped.add(index)
            skipped.append((os.path.join(self.root, relative), REASON_DUPLICATE, *where))
            if size != MISSING:
                self.counts[split] -= 1
                self.sizes[split] -= size
        for index in self._missing:
            if index not in dropped:
                dropped.add(index)
                relative, _, _, where, _ = self._entry(index)
                skipped.append((os.path.join(self.root, relative), REASON_NO_FILE, *where))
        if dropped:
            order = order[~np.isin(order, np.fromiter(dropped, dtype=order.dtype))]
        self._order, self._hashes, self._missing = order, None, None
        return skipped

    def age_keys(self):
        """The record_encoder.age_key of every distinct label (each candidate's among them)."""
        return [record_encoder.age_key(labels.age, labels.age_min, labels.age_max)
                for labels in self._labels]

    def __len__(self):
        return len(self._order)

    def __iter__(self):
        # A chunk at a time: a whole list of Python ints would cost 40 bytes a face.
        for start in range(0, len(self._order), _CHUNK):
            for index in self._order[start:start + _CHUNK].tolist():
                relative, labels, split, where, size = self._entry(index)
                yield conversion_workers.Candidate(os.path.join(self.root, relative), relative,
                                                   labels, split, where=where, size=size)

    def close(self):
        self._spill.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CandidateList:
    """Candidates in a list (the file-name rules' few hundred thousand at most) with a
    CandidateTable's view for the shard plan: counts and sizes per split, and age keys."""

    def __init__(self, candidates):
        self._candidates = list(candidates)
        self.counts, self.sizes = dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0)
        for candidate in self._candidates:
            self.counts[candidate.split] += 1
            self.sizes[candidate.split] += (file_size(candidate.path) if candidate.size is None
                                            else candidate.size)

    def age_keys(self):
        return [candidate.age_key for candidate in self._candidates]

    def __len__(self):
        return len(self._candidates)

    def __iter__(self):
        return iter(self._candidates)
