"""The settings of reading a dataset: where it is, how to decode, shuffle and augment it.

Frozen dataclasses that check themselves when made, with messages that name the flag and the
fix. No TensorFlow: agetf.train checks its flags with them before TensorFlow starts.
"""

import dataclasses
import os

from agetf import UsageError
from agetf.common import setting_checks as check


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """How strongly to augment training images; the defaults are mild, face-preserving."""

    flip: bool = True
    # Area fraction of the random crop; above 1 zooms out: the box is larger than the image,
    # whose mirror image fills the border (a loosely framed face). At most 2.
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_aspect: tuple[float, float] = (0.9, 1.1)  # crop width / height, relative to the image
    brightness: float = 0.15  # max delta as a fraction of 255
    contrast: tuple[float, float] = (0.8, 1.2)
    blur_probability: float = 0.1  # light 3x3 blur
    grey_probability: float = 0.0  # luminance in all three channels, after the crop

    def __post_init__(self):
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 2:
            shown = ",".join(check.shown(value) for value in self.crop_scale)
            raise UsageError(f"--crop_scale={shown} must be LOW,HIGH with 0 < LOW <= HIGH <= 2 "
                             "(area fractions; above 1 zooms out), e.g. --crop_scale=0.8,1.4")
        low, high = self.crop_aspect
        if not 0 < low <= high:
            raise UsageError(f"crop_aspect must satisfy 0 < low <= high, got {self.crop_aspect}")
        low, high = self.contrast
        if not 0 <= low <= high:
            raise UsageError(f"contrast must satisfy 0 <= low <= high, got {self.contrast}")
        if not 0 <= self.brightness <= 1:
            raise UsageError(f"brightness must be in [0, 1], got {self.brightness}")
        if not 0 <= self.blur_probability <= 1:
            raise UsageError(f"blur_probability must be in [0, 1], got {self.blur_probability}")
        check.within("grey_probability", self.grey_probability, 0, 1, (True, True), "0.1")


NO_AUGMENTATION = AugmentConfig(flip=False, crop_scale=(1.0, 1.0), crop_aspect=(1.0, 1.0),
                                brightness=0.0, contrast=(1.0, 1.0), blur_probability=0.0,
                                grey_probability=0.0)


@dataclasses.dataclass(frozen=True)
class DataSource:
    """One converted dataset of a run and its sampling weight among the run's datasets."""

    path: str
    weight: float = 1.0

    @property
    def name(self):
        """The folder's own name: what a per-dataset report is named after."""
        return os.path.basename(self.path.rstrip("/")) or self.path


def parse_data_dirs(text):
    """--data_dir as DataSources: `PATH` (weight 1) or `PATH:WEIGHT,PATH:WEIGHT,...`.

    A ':' followed by no '/' starts a weight, so gs://bucket/path stays one path.

    Raises:
        UsageError: an empty item, a weight that is not a number > 0, a path given twice, or
            two datasets whose folders share a name (their reports would share a file).
    """
    sources = []
    for item in str(text).split(","):
        path, colon, weight = item.strip().rpartition(":")
        if not colon or "/" in weight:
            path, weight = item.strip(), "1"
        try:
            value = float(weight)
        except ValueError:
            value = float("nan")
        if not path or not value > 0 or value == float("inf"):
            raise UsageError(f"--data_dir={text}: item {item.strip()!r} must be PATH or "
                             "PATH:WEIGHT with a weight > 0, e.g. "
                             "--data_dir=tfrecords/imdb_wiki:1,tfrecords/utkface:3")
        sources.append(DataSource(path, value))
    paths = [os.path.normpath(source.path) for source in sources]
    names = [source.name for source in sources]
    for seen, what in ((paths, "twice"), (names, "in two folders of the same name")):
        repeated = sorted({value for value in seen if seen.count(value) > 1})
        if repeated:
            raise UsageError(f"--data_dir={text} names {repeated[0]} {what}; give each dataset "
                             "once, each in a folder of its own name")
    return tuple(sources)


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """Where the data is and how to read it, shared by train and eval.

    `data_dir` is one converted dataset, or several with sampling weights
    (`a:1,b:3`, see parse_data_dirs): training mixes them, evaluation reads each alone.
    """

    data_dir: str
    img_dim: int = 128
    shuffle_buffer: int = 2048
    cache: bool = False  # cache decoded images (after decode, before augment) in memory
    augment: AugmentConfig = AugmentConfig()
    age_deviation: float | None = None  # None: the histogram stored in the records
    skip_corrupt_records: bool = False
    threads: int | None = None  # private thread pool size; None = tf.data default
    seed: int | None = None
    data_service: str | None = None  # grpc://HOST:PORT: training preprocessing runs there

    def __post_init__(self):
        check.at_least("shuffle_buffer", self.shuffle_buffer, 1, " (1: no shuffling)")
        check.positive("age_deviation", self.age_deviation)
        sources = parse_data_dirs(self.data_dir)
        if len(sources) == 1:  # one dataset's weight means nothing: data_dir is its path
            object.__setattr__(self, "data_dir", sources[0].path)

    @property
    def sources(self):
        """The datasets of --data_dir with their sampling weights (one, weight 1, usually)."""
        return parse_data_dirs(self.data_dir)

    @property
    def mixed(self):
        """Whether --data_dir names several datasets."""
        return len(self.sources) > 1

    def for_each_dataset(self):
        """(DataSource, this config reading that dataset alone) for each dataset."""
        return [(source, dataclasses.replace(self, data_dir=source.path))
                for source in self.sources]
