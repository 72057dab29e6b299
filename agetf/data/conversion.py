"""Converts folders of named face crops into sharded TFRecords that TFDS can load.

First every file is listed and its name parsed (its split comes from a hash of the name or a
split file, agetf.data.split_files; each split's shard count from the files' sizes); a
manifest's rows are checked instead (agetf.data.manifest) and held compactly, not as one object
per face (agetf.data.candidate_table). The worker processes start meanwhile. Then, in one
streaming pass, they check each image and serialize and frame its record
(agetf.data.conversion_workers), while the main process appends the records to shards under
a temporary folder as they arrive (agetf.data.shard_writer). The complete dataset (shards,
TFDS metadata, JSON report) is built in that folder, then swapped with the output folder in
one step (agetf.common.folder_swap), so the output folder holds the old complete dataset or
the new one at every moment, a kill -9 included. One conversion at a time per output folder:
it holds a lock on OUTPUT/.convert.lock while it runs.

TensorFlow is imported only in the main process, once the inputs are checked.
"""

import contextlib
import dataclasses
import itertools
import os
import shutil
import time

from agetf.common import folder_swap, progress, run_lock
from agetf.data import (
    candidate_table,
    conversion_report,
    conversion_workers,
    label_adapters,
    manifest,
    names,
    record_encoder,
    shard_writer,
    split_files,
)
from agetf.data.convert_config import ConversionError
from agetf.data.dataset_files import REPORT_FILE, SHARD_FILE, SPLITS

METADATA_FILES = ("dataset_info.json", "features.json", REPORT_FILE, split_files.SPLIT_FILE)
LOCK_FILE = ".convert.lock"  # held (run_lock.hold) by the conversion writing into the folder

# Why a file is skipped, beside what reading it can find (image_files' REASON_*).
REASON_DUPLICATE = "duplicate file name"
REASON_NOT_IN_SPLIT_FILE = "not in the split file"


def convert(config):
    """Runs a whole conversion.

    Args:
      config: a ConvertConfig.

    Returns:
      The report dict, also written as OUTPUT/conversion_report.json.

    Raises:
      ConversionError: a bad input folder or split file, an output folder that is not
        empty without config.overwrite, or another conversion writing into the same output
        folder; the output folder is left as it was.
    """
    check_folders(config)
    with contextlib.ExitStack() as stack:
        # A manifest's header and paths are checked before anything is written or locked.
        labelled = _labelled_candidates(config, stack) if config.reads_labels_file else None
        output = os.path.realpath(config.output_dir)  # the folder swapped, not a link to it
        created_output = not os.path.isdir(output)
        lock = _lock_output(config, output)
        try:
            folder_swap.finish_interrupted_swap(output, is_dataset_file)
            # Again, now that no other conversion can write there: one may have just finished.
            _refuse_a_full_output_without_overwrite(config)
            return _convert_locked(config, output, stack, labelled)
        except ConversionError:
            if created_output:
                folder_swap.remove_created(output, LOCK_FILE)
            raise
        finally:
            lock.release()


def check_folders(config):
    """Raises ConversionError (one line) for a missing or empty input folder, or an output
    folder that cannot be one, before any work."""
    if not config.input_dirs:
        raise ConversionError("no input directory given; pass --input_dir=DIR")
    for input_dir in config.input_dirs:
        if not os.path.isdir(input_dir):
            raise ConversionError(f"input directory {input_dir} does not exist; check --input_dir")
        if not any(files for _, _, files in os.walk(input_dir)):
            raise ConversionError(f"input directory {input_dir} holds no files; check --input_dir")
    output = os.path.abspath(config.output_dir)
    if os.path.exists(output) and not os.path.isdir(output):
        raise ConversionError(f"output {config.output_dir} is a file; "
                              "choose a directory for --output_dir")
    for input_dir in config.input_dirs:
        if os.path.commonpath([output, os.path.abspath(input_dir)]) == os.path.abspath(input_dir):
            raise ConversionError(f"output {config.output_dir} is inside input {input_dir}; "
                                  "choose another --output_dir")
    _refuse_a_full_output_without_overwrite(config)


def _refuse_a_full_output_without_overwrite(config):
    output = config.output_dir
    if (not config.overwrite and os.path.isdir(output)
            and any(entry != LOCK_FILE for entry in os.listdir(output))):
        raise ConversionError(
            f"output directory {config.output_dir} is not empty; "
            "pass --overwrite to replace its dataset")


def _lock_output(config, output):
    """Takes the output folder's conversion lock (creating the folder); a ConversionError
    naming the conversion that holds it (pid, host) and the fix."""
    try:
        lock = folder_swap.hold(output, LOCK_FILE, "converting")
    except OSError as error:
        raise ConversionError(f"cannot write in output directory {config.output_dir} "
                              f"({error.strerror}); choose a folder you can write") from None
    if lock is None:
        path = os.path.join(output, LOCK_FILE)
        description, pid = run_lock.holder(path)
        raise ConversionError(
            f"output directory {config.output_dir} is in use by another conversion ({description}; "
            f"lock file {path}); wait for it to finish, or stop it (kill {pid} on its host) and "
            "rerun, or choose another --output_dir")
    return lock


def is_dataset_file(entry):
    """Whether a name in the output folder is a dataset's shard or metadata file."""
    return (entry in METADATA_FILES or entry.endswith(".labels.txt")
            or bool(SHARD_FILE.search(entry)))


def _swap_order(entry):
    """The in-place fallback's order: shards first, dataset_info.json (what TFDS reads) last."""
    return not SHARD_FILE.search(entry), entry == "dataset_info.json"


@dataclasses.dataclass
class _Outcome:
    """What the streaming pass found, besides the records it wrote."""

    skipped: list  # [(path, reason)], or (path, reason, labels file, line) of a manifest's row
    keep_names: bool = False  # whether kept_names lists the kept files (for splits.csv)
    kept: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    kept_names: dict = dataclasses.field(default_factory=lambda: {split: [] for split in SPLITS})
    noted: dict = dataclasses.field(default_factory=dict)  # {note: [file names]} of odd kept names
    sizes: dict = dataclasses.field(default_factory=dict)  # {(split, height, width): images}

    def keep(self, candidate, height, width):
        self.kept[candidate.split] += 1
        if self.keep_names:
            self.kept_names[candidate.split].append(candidate.file_name)
        for note in candidate.notes:
            self.noted.setdefault(note, []).append(candidate.file_name)
        key = (candidate.split, height, width)
        self.sizes[key] = self.sizes.get(key, 0) + 1

    def image_sizes(self):
        """{split: {"HxW": images}}, each split's sizes in order."""
        found = {split: {} for split in SPLITS}
        for (split, height, width), count in self.sizes.items():
            found[split][f"{height}x{width}"] = count
        return {split: dict(sorted(sizes.items())) for split, sizes in found.items()}


def _start_encoders(config, stack):
    """The worker processes (conversion_workers.Encoders), stopped when `stack` closes: started
    before the serial pass over the labels, whose file checks they take over."""
    return stack.enter_context(conversion_workers.Encoders(config.workers or _available_cores()))


def _labelled_candidates(config, stack):
    """(candidates, skipped, seconds, encoders) of a manifest or a dataset adapter's label
    files; the workers start once the header has passed its check."""
    start = time.monotonic()
    rows = label_adapters.read_rows(config)
    first = next(rows, None)  # a bad header is refused here, before any worker starts
    encoders = _start_encoders(config, stack)
    candidates, skipped = manifest.collect_candidates(
        itertools.chain([] if first is None else [first], rows), config.input_dirs[0],
        config.split_ratios, helpers=encoders)
    stack.enter_context(candidates)  # its temporary file goes with the conversion
    return candidates, skipped, time.monotonic() - start, encoders


def _convert_locked(config, output, stack, labelled=None):
    start = time.monotonic()
    plan, missing = None, []
    if labelled:
        candidates, skipped, seconds, encoders = labelled
        start -= seconds  # reading the labels is part of the conversion's time
        return _convert_candidates(config, output, encoders, candidates, skipped, start)
    else:
        encoders = _start_encoders(config, stack)
        if config.split_file:
            plan = split_files.read_split_files(config.split_file, config.split_ratios)
        split_map = plan.splits if plan else None
        paths = list_files(config.input_dirs)
        # A partial copy of the dataset silently gives another split: name what is missing.
        missing = (sorted(set(split_map) - {os.path.basename(p) for p in paths})
                   if split_map else [])
        candidates, skipped = collect_candidates(paths, config.split_ratios, split_map)
    candidates = candidate_table.CandidateList(order_for_writing(candidates))
    return _convert_candidates(config, output, encoders, candidates, skipped, start, plan,
                               missing)


def _convert_candidates(config, output, encoders, candidates, skipped, start, plan=None,
                        missing=()):
    """Writes the candidates (in writing order) and the metadata, then swaps the new dataset
    in; returns the report."""
    import tensorflow as tf  # noqa: F401  (imported before the bar starts, so its rate is honest)

    incomplete = folder_swap.start_staging(output)
    writers, outcome = _write_shards(config, encoders, candidates, skipped, incomplete)
    if not outcome.kept["train"]:
        shutil.rmtree(incomplete)
        reasons = ", ".join(sorted({item[1] for item in skipped})) or "none found"
        raise ConversionError(f"no usable training image in {', '.join(config.input_dirs)} "
                              f"({len(skipped)} skipped: {reasons}); check --input_dir")

    # The whole new dataset is built beside the old one, which stays until the swap.
    shard_lengths, split_bytes = {}, {}
    for split in SPLITS:
        shard_lengths[split], split_bytes[split] = writers[split].publish(incomplete,
                                                                          config.dataset_name)
    shard_writer.write_metadata(incomplete, shard_lengths, split_bytes)
    if config.write_split_file:
        split_files.write_split_file(os.path.join(incomplete, split_files.SPLIT_FILE),
                                     outcome.kept_names)
    report = conversion_report.write_report(config, shard_lengths, skipped, start, plan,
                                            outcome.image_sizes(), missing, outcome.noted,
                                            folder=incomplete)
    folder_swap.swap_in(incomplete, output, is_dataset_file, order=_swap_order)
    return report


def _write_shards(config, encoders, candidates, skipped, folder):
    """The streaming pass: workers (a conversion_workers.Encoders) encode and frame the
    candidates' records while they are appended to shards in `folder`. Returns
    ({split: SplitWriter}, _Outcome); `skipped` grows.

    candidates: a candidate_table.CandidateTable or CandidateList, in writing order.
    """
    num_shards = {split: shard_writer.count_shards(candidates.counts[split],
                                                   candidates.sizes[split], config)
                  for split in SPLITS}
    age_entries = record_encoder.label_entries(candidates.age_keys(), config.age_deviation)
    writers = {split: shard_writer.SplitWriter(folder, split, candidates.counts[split],
                                               num_shards[split])
               for split in SPLITS}
    outcome = _Outcome(skipped, keep_names=config.write_split_file)
    bar = progress.CountingBar("converting", len(candidates), config.show_progress)
    results = encoders.encode_each(candidates, age_entries)
    with contextlib.closing(results):
        for candidate, (reason, height, width, framed) in results:
            writers[candidate.split].add(framed)
            if reason:
                skipped.append((candidate.path, reason, *candidate.where))
            else:
                outcome.keep(candidate, height, width)
            bar.add(1)
    bar.close()
    for writer in writers.values():
        writer.close()
    return writers, outcome


def list_files(input_dirs):
    """Every regular file under the input folders, recursively, in a stable order."""
    paths = []
    for input_dir in input_dirs:
        for root, dirs, filenames in os.walk(input_dir):
            dirs.sort()
            paths.extend(os.path.join(root, name) for name in sorted(filenames))
    return paths


def collect_candidates(paths, split_ratios, split_map=None):
    """Parses every name; returns (candidates, skipped) where skipped is [(path, reason)].

    With split_map ({file name: split}) files get exactly those splits and unlisted files
    are skipped; without it, splits come from the hash of the name.
    """
    candidates, skipped, seen = [], [], set()
    for path in paths:
        file_name = os.path.basename(path)
        try:
            labels, notes = names.parse_face_name_with_notes(file_name)
        except names.UnparseableName as error:
            skipped.append((path, error.reason))
            continue
        # The same name twice would be the same identity in two places; keep the first.
        if file_name in seen:
            skipped.append((path, REASON_DUPLICATE))
            continue
        seen.add(file_name)
        if split_map is None:
            split = split_files.assign_split(file_name, split_ratios)
        elif file_name in split_map:
            split = split_map[file_name]
        else:
            skipped.append((path, REASON_NOT_IN_SPLIT_FILE))
            continue
        candidates.append(conversion_workers.Candidate(path, file_name, labels, split, notes))
    return candidates, skipped


def order_for_writing(candidates):
    """A stable pseudo-random order, so that no shard holds one narrow age band (names start
    with the age)."""
    return sorted(candidates, key=lambda c: split_files.name_hash(c.file_name, "order"))


def _available_cores():
    """Cores this process may use (a container's CPU limit, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
