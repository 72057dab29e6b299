"""Reading image files: the converter's faces, agetf.predict's crops and photos.

Whatever goes wrong with one file (not a regular file, unreadable, over the limits, not an
image, cut or corrupt) is one ImageReadError: its message is the line agetf.predict prints
for that path, its `reason` the short, stable string the converter counts in its report.
Pillow's many error types become that one error in one place (`pillow_errors`).

Only regular files are opened (a FIFO would block, /dev/zero never ends), and ReadLimits
caps what one input may cost: the file's size, and the pixels it is decoded to (a JPEG over
them decodes at 1/2, 1/4 or 1/8 scale). The converter reads without limits.

Images reach the model and the TFRecords as RGB JPEG bytes (`rgb_jpeg`): an RGB JPEG's own
bytes, anything else decodable re-encoded. Pillow, numpy and the standard library only, so
the converter's worker processes import this without TensorFlow.
"""

import contextlib
import dataclasses
import io
import math
import os
import stat
import warnings
from typing import Optional

import numpy as np
from PIL import Image, ImageOps

from agetf import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")  # what a folder of images is searched for
REENCODE_QUALITY = 95  # of the JPEG a non-JPEG (or non-RGB) image is stored as
# What one input may cost. Peak memory on one photo with --detect_faces is ~0.85 GB
# (TensorFlow, the model, MTCNN) + MTCNN's own (agetf.serving.face_detection caps the pixels it
# sees) + ~6 bytes per decoded pixel (the decode and its array): 40 MP keeps it ~1.5 GB, and
# a JPEG over it decodes at 1/2, 1/4 or 1/8 scale (a 200 MP phone JPEG at 1/4). A file
# over 128 MB is not read (the crop path holds each file's bytes): that is above any image
# within 40 MP stored as 8-bit RGB even uncompressed (120 MB), and than camera JPEGs.
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_FILE_MB = 128
_JPEG_SCALES = (1, 2, 4, 8)  # the DCT scalings libjpeg decodes at: 1/1 ... 1/8
_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISDIR, "a folder"))

# Why a file is not used: the converter's report counts files by these.
REASON_NOT_REGULAR = "not a regular file"
REASON_UNREADABLE = "unreadable file"
REASON_EMPTY = "empty file"
REASON_NOT_IMAGE = "not a decodable image"
REASON_TRUNCATED = "truncated or corrupt image"
REASON_OVER_LIMITS = "over the size limits"


class ImageReadError(UsageError):
    """A file that cannot be read or decoded as an image, or is not read (see ReadLimits);
    `reason` is one of the REASON_* strings."""

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ReadLimits:
    """What one input may cost: the file's size, and the pixels it is decoded to (a JPEG
    over max_pixels decodes at 1/2, 1/4 or 1/8 scale; any other image over it is refused)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_mb: float = DEFAULT_MAX_FILE_MB

    def __post_init__(self):
        if self.max_pixels < 1 or self.max_file_mb <= 0:
            raise UsageError(f"--max_pixels and --max_file_mb must be positive, got "
                             f"{self.max_pixels} and {self.max_file_mb}; the defaults are "
                             f"{DEFAULT_MAX_PIXELS} and {DEFAULT_MAX_FILE_MB}")

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 1_000_000)


def _cannot_read(path, error, reason=REASON_UNREADABLE):
    return ImageReadError(f"cannot read {path} as an image ({error})", reason)


def open_image_file(path: str, limits: Optional[ReadLimits] = None):
    """The file opened for reading (binary) if it is a regular file, after following links,
    of at most limits.max_bytes (any size without limits); ImageReadError otherwise. Nothing
    else is opened: a FIFO would block until a writer comes, and a device such as /dev/zero
    never ends."""
    try:
        _check_file(path, os.stat(path), limits)
        # Non-blocking, so that a FIFO put in the file's place after the check cannot block
        # the open; the checks are repeated on what was opened.
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                         | getattr(os, "O_NOCTTY", 0))
    except OSError as error:
        raise _cannot_read(path, error) from error
    try:
        _check_file(path, os.fstat(handle), limits)
    except ImageReadError:
        os.close(handle)
        raise
    return os.fdopen(handle, "rb")


def _check_file(path, status, limits):
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(status.st_mode)), "not a file")
        raise ImageReadError(f"{path} is not a regular file ({kind}), not read",
                             REASON_NOT_REGULAR)
    _check_size(path, status.st_size, limits)


def _check_size(path, size, limits):
    if limits is not None and size > limits.max_bytes:
        raise ImageReadError(f"{path} is {size / 1e6:.1f} MB, more than the "
                             f"{limits.max_file_mb:g} MB an image file may have "
                             "(--max_file_mb), not read", REASON_OVER_LIMITS)


def read_file(path: str, limits: Optional[ReadLimits] = None) -> bytes:
    """The bytes of a regular file within limits.max_bytes (open_image_file)."""
    with open_image_file(path, limits) as f:
        try:
            # +1: a file that grew since its check
            data = f.read() if limits is None else f.read(limits.max_bytes + 1)
        except OSError as error:
            raise _cannot_read(path, error) from error
    _check_size(path, len(data), limits)
    return data


@contextlib.contextmanager
def pillow_errors(path: str, reason: str = REASON_TRUNCATED):
    """Pillow's many error types for a bad image, as one ImageReadError naming path: one that
    is no image format at all, or any other with `reason` (what failed: the header read,
    REASON_NOT_IMAGE, or the decode, REASON_TRUNCATED)."""

    try:
        yield
    except ImageReadError:
        raise
    except Image.UnidentifiedImageError as error:
        raise ImageReadError(f"cannot read {path} as an image (not an image format)",
                             REASON_NOT_IMAGE) from error
    except Exception as error:  # Pillow raises many types for corrupt images
        raise _cannot_read(path, error, reason) from error


def open_image(path: str, file):
    """The image in `file` (a path or a binary file) opened, its header read and its pixels not
    yet decoded. Without Pillow's DecompressionBombWarning: reduced_scale checks the size
    against the limits instead (Pillow still refuses over twice its own limit, 179 MP)."""

    with pillow_errors(path, REASON_NOT_IMAGE), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(file)


def reduced_scale(path: str, image, max_pixels: Optional[int]) -> int:
    """1 if an opened (not yet decoded) image has at most max_pixels (or there is no limit),
    else the DCT scale (2, 4 or 8) at which a JPEG fits; ImageReadError for any other image
    over max_pixels."""
    if max_pixels is None:
        return 1
    width, height = image.size
    for scale in _JPEG_SCALES if image.format == "JPEG" else (1,):
        if math.ceil(width / scale) * math.ceil(height / scale) <= max_pixels:
            return scale
    raise ImageReadError(
        f"{path} has {width}x{height} pixels ({width * height / 1e6:.1f} MP), more than the "
        f"{max_pixels / 1e6:g} MP an image may have (--max_pixels)"
        + (" even decoded at 1/8 scale" if image.format == "JPEG"
           else "; only JPEGs are decoded at reduced scale"), REASON_OVER_LIMITS)


def draft(path: str, image, scale: int, max_pixels: int) -> None:
    """Makes an opened JPEG decode at 1/scale (libjpeg's DCT scaling, in Pillow's draft)."""
    width, height = image.size
    # draft() picks the largest scale that leaves at least the size asked for.
    image.draft(None, (width // scale, height // scale))
    if image.size[0] * image.size[1] > max_pixels:  # a JPEG Pillow could not scale
        raise ImageReadError(f"{path} has {width}x{height} pixels ({width * height / 1e6:.1f} "
                             f"MP), more than the {max_pixels / 1e6:g} MP an image may have "
                             "(--max_pixels), and cannot be decoded at reduced scale",
                             REASON_OVER_LIMITS)


def decode(path: str, image, max_pixels: Optional[int] = None) -> int:
    """Decodes an opened image, a JPEG over max_pixels at the reduced scale it fits
    (reduced_scale); returns the image's pixels per decoded pixel along a side (1 at full
    size). ImageReadError when it is over the limits, or cut or corrupt."""
    with pillow_errors(path):
        width = image.size[0]
        scale = reduced_scale(path, image, max_pixels)
        if scale > 1:
            draft(path, image, scale, max_pixels)
        image.load()
        return width / image.size[0]


def rgb_jpeg(path: str, data: bytes, check: bool = True,
             max_pixels: Optional[int] = DEFAULT_MAX_PIXELS):
    """(JPEG bytes, width, height) of a file's bytes already in memory (path names it in
    errors): the bytes themselves for an RGB JPEG, else the image re-encoded as one.

    Every image is decoded, so a cut or corrupt file raises ImageReadError here; check=False
    skips that decode for RGB JPEGs, whose bytes then go on unchecked. An image over
    max_pixels is refused from its header (reduced_scale), except a JPEG that fits at a
    reduced scale: an RGB one is passed on (the model decodes it at a DCT scale near its
    input size); any other is decoded at that scale before re-encoding.
    """
    if not data:
        raise ImageReadError(f"cannot read {path} as an image (not an image format)",
                             REASON_EMPTY)
    image = open_image(path, io.BytesIO(data))
    width, height = image.size
    if image.format == "JPEG" and image.mode == "RGB":
        with pillow_errors(path):
            reduced_scale(path, image, max_pixels)
            if check:
                # Its pixels are thrown away (the bytes are passed on as they are): decoding
                # at 1/8 scale parses the same entropy-coded stream, so cut and corrupt files
                # fail here as in a full decode, with the same errors, at half the CPU time.
                image.draft("RGB", (1, 1))
                image.load()
        return data, width, height
    decode(path, image, max_pixels)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=REENCODE_QUALITY)
    return buffer.getvalue(), width, height


def read_jpeg(path: str, check: bool = True, limits: Optional[ReadLimits] = None) -> bytes:
    """The file's bytes if an RGB JPEG, else the image re-encoded as one (rgb_jpeg), within
    limits (default ReadLimits()): files and images over them raise ImageReadError before
    any decode."""
    limits = limits or ReadLimits()
    return rgb_jpeg(path, read_file(path, limits), check, limits.max_pixels)[0]


def read_photo(path: str, limits: Optional[ReadLimits] = None):
    """(a uint8 RGB array, its scale): the photo turned upright by its EXIF orientation
    (phone photos); a JPEG over limits.max_pixels decoded at 1/2, 1/4 or 1/8 scale, and
    scale the photo's pixels per array pixel (1 at full size). Over limits: ImageReadError."""
    limits = limits or ReadLimits()
    with open_image_file(path, limits) as f, open_image(path, f) as image:
        scale = decode(path, image, limits.max_pixels)
        with pillow_errors(path):
            ImageOps.exif_transpose(image, in_place=True)
            upright = image if image.mode == "RGB" else image.convert("RGB")
            return np.asarray(upright), scale
