"""The converter's worker processes: each checks an image and encodes its record.

A worker decodes each file (valid RGB JPEG bytes pass through, anything else decodable is
re-encoded, the rest skipped with a reason), serializes its record and frames it as a TFRecord
file holds it (CRC-32C included). Workers are spawned processes that import this module and
need only Pillow and google-crc32c: records are written by agetf.data.record_encoder and
framed by agetf.data.shard_writer, without TensorFlow. They are started (Encoders) before the
main process reads the labels, so that their start-up overlaps that serial pass.
"""

import collections
import dataclasses
import multiprocessing
import queue
import threading
import traceback

from agetf.data import image_files, names, record_encoder, shard_writer

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
    """(reason, height, width, framed record or None) of one candidate file: the record
    serialized, then framed by shard_writer.frame_record."""
    return _encode_task(_task(candidate), age_entries_by_age)


def _task(candidate):
    """What a worker needs of a candidate, as a tuple: it pickles ten times faster."""
    labels = candidate.labels
    return (candidate.path, candidate.file_name, candidate.age_key, labels.gender, labels.race,
            labels.weight)


def _encode_task(task, age_entries_by_age):
    path, file_name, age_key, gender, race, weight = task
    reason, height, width, jpeg = check_image(path)
    if reason:
        return reason, 0, 0, None
    return None, height, width, shard_writer.frame_record(*record_encoder.encode_example_pieces(
        jpeg=jpeg, age_entries=age_entries_by_age[age_key], gender=gender, race=race,
        filename=file_name, height=height, width=width, weight=weight))


def _serve(connection):
    """A worker process's loop, until None: a dict is the label table
    (record_encoder.label_entries) of the batches of encode tasks (lists) that follow; a
    (function, args) tuple is a call (Encoders.call_each), answered with its result.

    A thread sends the results, so that the next batch is encoded while the main process has
    yet to read the last one (a result outgrows the pipe's buffer, and is read in turn).
    """
    results = queue.SimpleQueue()
    sender = threading.Thread(target=_send_all, args=(connection, results), daemon=True)
    sender.start()
    age_entries_by_age = None
    try:
        while (message := connection.recv()) is not None:
            if isinstance(message, dict):
                age_entries_by_age = message
                continue
            try:
                if isinstance(message, tuple):
                    function, args = message
                    results.put(function(*args))
                else:
                    results.put([_encode_task(task, age_entries_by_age) for task in message])
            except Exception:  # a bug, not a bad image (those are reasons): the main process raises
                results.put(traceback.format_exc())
    except (EOFError, KeyboardInterrupt):
        pass  # the main process is gone or stopping
    results.put(None)
    sender.join()


def _send_all(connection, results):
    while (item := results.get()) is not None:
        try:
            connection.send(item)
        except OSError:
            return  # the main process is gone


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
      (reason, height, width, framed) per candidate: reason None and the framed record
      (shard_writer.frame_record) for a usable image, else an image_files.REASON_* and None.
    """
    for _, result in encode_each(candidates, age_entries_by_age, workers):
        yield result


def encode_each(candidates, age_entries_by_age, workers):
    """encode_all's results with their candidates: yields (candidate, result), so that the
    candidates may be a generator, made one at a time. Starts and stops its own Encoders."""
    with Encoders(workers) as encoders:
        yield from encoders.encode_each(candidates, age_entries_by_age)


class Encoders:
    """The worker processes, started before there is work for them, used once, then stopped.

    Batch i goes to worker i mod workers over its own pipe, and each worker answers in turn,
    so results come back in order with no thread in this process (a multiprocessing.Pool's
    task and result threads cost more CPU here than writing the records). With workers <= 1
    none is started and this process encodes.

    Use: `with Encoders(n) as encoders:` ... `encoders.encode_each(candidates, table)`.
    """

    def __init__(self, workers):
        self.workers = workers
        self._pipes, self._processes, self._finished = [], [], False
        if workers <= 1:
            return
        # spawn, not fork: the caller may have TensorFlow's threads and locks live.
        context = multiprocessing.get_context("spawn")
        try:
            for _ in range(workers):
                ours, theirs = context.Pipe()
                process = context.Process(target=_serve, args=(theirs,), daemon=True)
                process.start()
                theirs.close()
                self._pipes.append(ours)
                self._processes.append(process)
        except BaseException:
            self.close()
            raise

    def call_each(self, calls):
        """Runs calls in the workers while more are taken: yields (context, function(*args))
        of each (context, function, args) of `calls`, in order. The function must be
        importable by name (a module's), and its arguments and result small: the context
        stays here. With no worker, this process calls them.

        The converter's serial pass over a manifest hands the workers its files' checks
        this way (manifest.collect_candidates), before they have images to encode.
        """
        if self.workers <= 1:
            for context, function, args in calls:
                yield context, function(*args)
            return
        yield from self._in_turn(((context, (function, args)) for context, function, args in calls),
                                 in_flight=2)

    def encode_each(self, candidates, age_entries_by_age):
        """Yields (candidate, encode_face's result) of each candidate, in order; once."""
        if self.workers <= 1:
            for candidate in candidates:
                yield candidate, encode_face(candidate, age_entries_by_age)
            return
        for pipe in self._pipes:
            pipe.send(age_entries_by_age)
        batches = ((batch, [_task(candidate) for candidate in batch])
                   for batch in _batches(candidates, BATCH_SIZE))
        for batch, results in self._in_turn(batches, BATCHES_IN_FLIGHT_PER_WORKER):
            yield from zip(batch, results)
        self._finished = True

    def _in_turn(self, messages, in_flight):
        """Sends message i of (context, message) pairs to worker i mod workers, with at most
        in_flight a worker unanswered; yields (context, answer) in order."""
        pending = collections.deque()  # (context, its worker's pipe), oldest first
        for index, (context, message) in enumerate(messages):
            pipe = self._pipes[index % self.workers]
            pipe.send(message)
            pending.append((context, pipe))
            if len(pending) >= self.workers * in_flight:
                context, pipe = pending.popleft()
                yield context, _result(pipe)
        while pending:
            context, pipe = pending.popleft()
            yield context, _result(pipe)

    def close(self):
        """Stops the workers: idle ones end; stopped early (an error, the generator closed),
        workers may be busy sending results no one reads, so they are terminated."""
        _stop(self._pipes, self._processes, self._finished)
        self._pipes, self._processes = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _result(pipe):
    """A worker's next answer; raises its error or its death."""
    try:
        result = pipe.recv()
    except EOFError:
        raise RuntimeError("a converter worker process died (out of memory, or killed); "
                           "rerun, with fewer --workers if memory is short") from None
    if isinstance(result, str):
        raise RuntimeError(f"a converter worker failed:\n{result}")
    return result


def _stop(pipes, processes, finished):
    """Lets idle workers end; stopped early (an error, the generator closed), workers may be
    busy sending results no one reads, so they are terminated."""
    for pipe in pipes if finished else ():
        try:
            pipe.send(None)
        except OSError:
            pass  # that worker is gone already
    for process in processes:
        process.join(timeout=5 if finished else 0)
        if process.is_alive():
            process.terminate()
            process.join()
    for pipe in pipes:
        pipe.close()
