"""Deterministic image decoding and resizing shared by the pipeline, evaluation and export.

Everything that turns stored bytes into model input for evaluation and serving goes
through here, so the exported model sees exactly the pixels the trainer evaluated.
"""

import dataclasses
import math

import tensorflow as tf

# JPEG can decode at 1/2, 1/4 or 1/8 scale in the DCT domain, far cheaper than a full
# decode followed by a resize.
_DCT_RATIOS = (1, 2, 4, 8)


def dct_ratio_index(height, width, img_dim):
    """Index into (1, 2, 4, 8) of the largest DCT scale that still leaves >= img_dim pixels."""
    min_side = tf.minimum(height, width)
    index = tf.constant(0)
    for i, ratio in enumerate(_DCT_RATIOS[1:], start=1):
        index = tf.where(min_side // ratio >= img_dim, i, index)
    return index


def decode_jpeg_at_least(jpeg, img_dim):
    """Decodes a JPEG to uint8 RGB at the smallest DCT scale whose short side is >= img_dim."""
    shape = tf.io.extract_jpeg_shape(jpeg)
    index = dct_ratio_index(shape[0], shape[1], img_dim)
    branches = [
        (lambda r=ratio: tf.io.decode_jpeg(jpeg, channels=3, ratio=r, dct_method="INTEGER_FAST"))
        for ratio in _DCT_RATIOS
    ]
    image = tf.switch_case(index, branches)
    image.set_shape([None, None, 3])
    return image


def resize(image, img_dim, width=None):
    """Resizes an image (or batch) to img_dim x img_dim (or x width), float32 in 0..255."""
    image = tf.image.resize(tf.cast(image, tf.float32), [img_dim, width or img_dim],
                            method="bilinear", antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def decode_and_resize(jpeg, img_dim):
    """Evaluation and serving preprocessing: JPEG bytes -> float32 [img_dim, img_dim, 3], 0..255."""
    return resize(decode_jpeg_at_least(jpeg, img_dim), img_dim)


@dataclasses.dataclass(frozen=True)
class Canvas:
    """The fixed size training images are decoded to, before the step crops and resizes them.

    ratio is the DCT scale when every source image has one known size (the decode itself
    yields height x width); None when sizes vary: decode, then resize to height x width.
    """

    height: int
    width: int
    ratio: int | None


def plan_canvas(source_sizes, img_dim, min_crop_side):
    """The canvas for a split whose images have `source_sizes` ((height, width) pairs).

    One size: the largest DCT scale whose smallest crop (a min_crop_side fraction of each
    side) still has img_dim pixels, so a 200 px face decodes at 1/2 scale for 64 px
    training. Several sizes or none known: a square whose smallest crop covers img_dim.
    """
    sizes = set(source_sizes)
    if len(sizes) == 1:
        (height, width), = sizes
        for ratio in reversed(_DCT_RATIOS):
            scaled = (math.ceil(height / ratio), math.ceil(width / ratio))
            if ratio == 1 or min(scaled) * min_crop_side >= img_dim:
                return Canvas(*scaled, ratio)
    side = int(math.ceil(img_dim / min_crop_side))
    return Canvas(side, side, None)


def decode_to_canvas(jpeg, canvas):
    """JPEG bytes -> uint8 [canvas.height, canvas.width, 3]."""
    if canvas.ratio is None:
        image = resize(decode_jpeg_at_least(jpeg, max(canvas.height, canvas.width)),
                       canvas.height, canvas.width)
        return tf.cast(tf.round(image), tf.uint8)
    image = tf.io.decode_jpeg(jpeg, channels=3, ratio=canvas.ratio, dct_method="INTEGER_FAST")
    # The conversion report promised this size; a record that breaks it fails loudly here.
    return tf.ensure_shape(image, [canvas.height, canvas.width, 3])
