"""Every setting of a conversion, as one frozen dataclass that checks its values once.

agetf.convert turns its flags into a ConvertConfig (each flag's default is the field's); a
script builds one directly and calls agetf.data.conversion.convert(config). The folders
themselves are checked when the conversion starts (conversion.check_folders). No TensorFlow.

    from agetf.data import conversion, convert_config
    conversion.convert(convert_config.ConvertConfig(input_dirs=["faces"], output_dir="out"))
"""

import dataclasses
import math
import os
import re

from agetf import UsageError

MIB = 2**20  # --shard_mb is in MiB; the config holds bytes
_DATASET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# The dataset adapters (agetf.data.label_adapters, one module each); named here so that the
# config checks a name without importing them.
LABEL_FORMATS = ("imdb_wiki", "appa_real", "afad", "adience", "fairface")


class ConversionError(UsageError):
    """A bad conversion setting or input; the message is one line naming the fix."""


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """Everything a conversion needs.

    Attributes:
      input_dirs: folders of face crops, searched recursively (str or path-like; kept as str).
      output_dir: where the shards, TFDS metadata and conversion_report.json go.
      split_ratios: train, validation and test shares of the hash split; they sum to 1.
      min_shards: fewest shards per split (never more shards than records).
      num_shards: shards per split, overriding the size-based count; None: by size.
      shard_bytes: target shard size, counted from the source files' sizes.
      age_deviation: sigma in years of the stored age histogram.
      dataset_name: the dataset's name in shard file names and TFDS metadata.
      workers: processes that check images and encode records; None: every core.
      overwrite: replace the dataset already in output_dir.
      show_progress: draw a progress bar (on a terminal only).
      split_file: a published split replacing the hash split: one CSV of `file name,split`
        rows, or per-split CSVs with a `file` column, "train=TRAIN.csv,test=TEST.csv"
        (agetf.data.split_files.read_split_files).
      write_split_file: write OUTPUT/splits.csv of every kept file.
      labels: a manifest (.csv or .jsonl) whose `file` paths are relative to the one input
        folder (agetf.data.manifest), or an adapter's label file or folder; None: labels come
        from the file names.
      labels_format: a dataset's published layout (agetf.data.label_adapters.FORMATS), read
        by its adapter; None: --labels is a manifest.
      apparent_age: appa_real: the mean apparent age instead of the real one.
      min_face_score: imdb_wiki: faces whose detector score is lower are skipped.
    """

    input_dirs: tuple
    output_dir: str
    split_ratios: tuple = (0.8, 0.1, 0.1)
    min_shards: int = 4
    num_shards: int | None = None
    shard_bytes: int = 128 * MIB
    age_deviation: float = 5.0
    dataset_name: str = "faces"
    workers: int | None = None
    overwrite: bool = False
    show_progress: bool = True
    split_file: str | None = None
    write_split_file: bool = False
    labels: str | None = None
    labels_format: str | None = None
    apparent_age: bool = False
    min_face_score: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "input_dirs", tuple(os.fspath(d) for d in self.input_dirs))
        object.__setattr__(self, "output_dir", os.fspath(self.output_dir))
        ratios = self.split_ratios
        if (len(ratios) != 3 or any(not math.isfinite(r) or r < 0 for r in ratios)
                or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0):
            raise ConversionError(
                f"split ratios {ratios} must be three non-negative numbers summing to 1 with "
                "train > 0; use e.g. --split_ratios=0.8,0.1,0.1")
        if self.min_shards < 1:
            raise ConversionError(f"--min_shards must be >= 1, got {self.min_shards}")
        if self.num_shards is not None and self.num_shards < 1:
            raise ConversionError(f"--num_shards must be >= 1 or unset, got {self.num_shards}")
        if self.shard_bytes < 1:
            raise ConversionError(f"--shard_mb must be > 0, got {self.shard_bytes / MIB:g} "
                                  f"(shard_bytes={self.shard_bytes})")
        if not self.age_deviation > 0:
            raise ConversionError(f"--age_deviation must be > 0 years, got {self.age_deviation}")
        if not _DATASET_NAME.match(self.dataset_name):
            raise ConversionError(
                f"--dataset_name={self.dataset_name!r} is not a valid TFDS name; "
                "use letters, digits and underscores, starting with a letter")
        if self.workers is not None and self.workers < 1:
            raise ConversionError(f"--workers must be >= 1, got {self.workers}")
        self._check_labels()

    @property
    def reads_labels_file(self):
        """Whether labels come from --labels or --labels_format, not from file names."""
        return bool(self.labels or self.labels_format)

    def _check_labels(self):
        if self.labels is not None:
            object.__setattr__(self, "labels", os.fspath(self.labels))
        if self.labels_format is not None and self.labels_format not in LABEL_FORMATS:
            raise ConversionError(f"--labels_format={self.labels_format!r} is unknown; use one "
                                  f"of {', '.join(LABEL_FORMATS)}, or leave it out for a "
                                  "manifest")
        if not self.reads_labels_file:
            return
        if len(self.input_dirs) != 1:
            raise ConversionError("--labels reads paths relative to one --input_dir; got "
                                  f"{len(self.input_dirs)}: give one, the manifest's root")
        if self.split_file:
            raise ConversionError("--split_file does not combine with --labels; put each "
                                  "file's split in the manifest's 'split' column")
        if self.apparent_age and self.labels_format != "appa_real":
            raise ConversionError("--apparent_age is for --labels_format=appa_real only")


def parse_split_ratios(text):
    """Parses "0.8,0.1,0.1" into a tuple of ratios; ConversionError when not numbers (the
    config checks how many and their sum)."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConversionError(f"--split_ratios={text!r} is not three numbers; "
                              "use e.g. 0.8,0.1,0.1") from None


def format_split_ratios(ratios):
    """The --split_ratios text of a tuple of ratios: (0.8, 0.1, 0.1) -> "0.8,0.1,0.1"."""
    return ",".join(f"{ratio:g}" for ratio in ratios)
