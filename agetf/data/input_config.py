"""The settings of reading a dataset: where it is, how to decode, shuffle and augment it.

Frozen dataclasses that check themselves when made, with messages that name the flag and the
fix. No TensorFlow: agetf.train checks its flags with them before TensorFlow starts.
"""

import dataclasses

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
class InputConfig:
    """Where the data is and how to read it; one per dataset, shared by train and eval."""

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
