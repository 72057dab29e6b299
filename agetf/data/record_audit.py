"""Counting the records that --skip_corrupt_records drops, so a run can say what it trains without.

tf.data's `ignore_errors` drops unreadable records quietly. A TFRecord reader stops at
the first broken record of a file (a failed checksum or a cut-off end), so everything
after it in that file is lost too. Reading each shard once, without decoding, and
comparing the records it yields with the conversion report's count for that shard gives
the number lost per file. Records whose JPEG fails to decode are not counted here (the
converter only writes images it could decode); tf.data logs each of those itself.
"""

import dataclasses

from agetf.data import dataset_files, input_pipeline


@dataclasses.dataclass(frozen=True)
class SplitAudit:
    """What reading every shard of one split found."""

    split: str
    readable: int  # records the reader yields, over all shards
    expected: int | None  # what the conversion report lists; None without one
    lost: dict  # path -> records lost in that file (None: broken, count unknown)

    @property
    def skipped(self):
        """Records the split lost, as far as the conversion report lets us count."""
        return sum(n for n in self.lost.values() if n)

    def describe(self):
        """One log line: how many records are skipped, of how many, and in which files."""
        if not self.lost:
            return (f"--skip_corrupt_records: all {self.readable:,} {self.split} records "
                    "are readable")
        files = ", ".join(f"{path}: {'unknown' if n is None else n}"
                          for path, n in self.lost.items())
        if self.expected is None or None in self.lost.values():
            return (f"skipping unreadable records in {self.split}: at least {self.skipped:,} lost, "
                    f"{self.readable:,} readable ({files}); without conversion_report.json's shard "
                    "lengths the rest of a broken file cannot be counted")
        return (f"skipping {self.skipped:,} unreadable records of {self.expected:,} in "
                f"{self.split} ({files})")


def _shard_lengths(data_dir, split, files):
    """{path: records written}, from the conversion report; {} when it has no usable list."""
    lengths = (input_pipeline.read_report(data_dir).get("settings", {})
               .get("shard_lengths", {}).get(split))
    if not isinstance(lengths, list):
        return {}
    known = {}
    for path in files:
        match = dataset_files.SHARD_FILE.search(path)
        if match and int(match["count"]) == len(lengths):
            known[path] = lengths[int(match["index"])]
    return known


def audit_split(data_dir, split):
    """Reads every record of `split` once (no decoding) and counts what a run will skip."""
    files = input_pipeline.list_shards(data_dir, split)
    written = _shard_lengths(data_dir, split, files)
    readable, lost = 0, {}
    for path in files:
        count, error = input_pipeline.read_shard(path)
        readable += count
        if path in written and written[path] > count:
            lost[path] = written[path] - count
        elif error is not None:
            lost[path] = None
    expected = sum(written.values()) if len(written) == len(files) else None
    return SplitAudit(split=split, readable=readable, expected=expected, lost=lost)
