"""The converter's worker processes: each checks an image and encodes its record.

A worker decodes each file (valid RGB JPEG bytes pass through, anything else decodable is
re-encoded, the rest skipped with a reason) and serializes its record. Workers are spawned
processes that import this module and need only Pillow: records are written by
agetf.data.record_encoder, without TensorFlow.
"""

import collections
import dataclasses
import multiprocessing

from agetf.data import image_files, names, record_encoder

BATCH_SIZE = 32  # candidates per worker task: few enough round trips, results flow steadily
BATCHES_IN_FLIGHT_PER_WORKER = 4


@dataclasses.dataclass(slots=True)  # slots: a few hundred thousand are made per conversion
class Candidate:
    """A file whose name parsed, on its way to a split: what a worker is handed."""

    path: str
    file_name: str
    labels: names.FaceLabels
    split: str
    notes: tuple = ()  # names.NOTES of an odd but parseable name
    where: tuple = ()  # (labels file, line) of a manifest's row, for the report
    size: int | None = None  # the file's bytes where already known (the manifest's check)

    @property
    def age_key(self):
        """The record_encoder.label_entries key of its age label."""
        return record_encoder.age_key(self.labels.age, self.labels.age_min, self.labels.age_max)


def check_image(path):
    """Reads and decodes one file: returns (reason, height, width, jpeg).

    reason is None for a usable image, and jpeg then holds the bytes to store: the file's
    own for a valid RGB JPEG, else the image re-encoded as an RGB JPEG (image_files.rgb_jpeg,
    without limits); else it is one of image_files' REASON_* strings.
    """
    try:
        jpeg, width, height = image_files.rgb_jpeg(path, image_files.read_file(path),
                                                   max_pixels=None)
    except image_files.ImageReadError as error:
        return error.reason, 0, 0, None
    return None, height, width, jpeg


def encode_face(candidate, age_entries_by_age):
    """(reason, height, width, serialized record or None) of one candidate file."""
    reason, height, width, jpeg = check_image(candidate.path)
    if reason:
        return reason, 0, 0, None
    labels = candidate.labels
    return None, height, width, record_encoder.encode_example(
        jpeg=jpeg, age_entries=age_entries_by_age[candidate.age_key], gender=labels.gender,
        race=labels.race, filename=candidate.file_name, height=height, width=width,
        weight=labels.weight)


_worker_age_entries = None  # each worker's copy of the label_entries() table


def _start_worker(age_entries_by_age):
    global _worker_age_entries
    _worker_age_entries = age_entries_by_age


def _encode_batch(candidates):
    return [encode_face(candidate, _worker_age_entries) for candidate in candidates]


def max_in_flight(workers):
    """Most candidates handed to workers and not yet written: what bounds the memory."""
    return workers * BATCHES_IN_FLIGHT_PER_WORKER * BATCH_SIZE


def _batches(items, size):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_all(candidates, age_entries_by_age, workers):
    """encode_face over an iterable of candidates, taken lazily; yields results in order.

    With workers > 1 it runs in spawned processes with at most max_in_flight(workers)
    candidates submitted and not yet yielded, so the encoded images held at once do not
    grow with the dataset (Pool.imap would queue every task, and every result the writer
    has not taken yet).

    Args:
      candidates: Candidates, any iterable.
      age_entries_by_age: record_encoder.label_entries() of every candidate's age_key.
      workers: processes; 1 encodes in this one.

    Yields:
      (reason, height, width, record) per candidate: reason None and the serialized record
      for a usable image, else an image_files.REASON_* and None.
    """
    for _, result in encode_each(candidates, age_entries_by_age, workers):
        yield result


def encode_each(candidates, age_entries_by_age, workers):
    """encode_all's results with their candidates: yields (candidate, result), so that the
    candidates may be a generator, made one at a time."""
    if workers <= 1:
        for candidate in candidates:
            yield candidate, encode_face(candidate, age_entries_by_age)
        return
    # spawn, not fork: the caller may have TensorFlow's threads and locks live.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(age_entries_by_age,)) as pool:
        pending = collections.deque()
        for batch in _batches(candidates, BATCH_SIZE):
            pending.append((batch, pool.apply_async(_encode_batch, (batch,))))
            if len(pending) >= workers * BATCHES_IN_FLIGHT_PER_WORKER:
                batch, results = pending.popleft()
                yield from zip(batch, results.get())
        while pending:
            batch, results = pending.popleft()
            yield from zip(batch, results.get())
