"""Deterministic image decoding and resizing shared by the pipeline, evaluation and export.

Everything that turns stored bytes into model input for evaluation and serving goes
through here, so the exported model sees exactly the pixels the trainer evaluated.
"""

import tensorflow as tf

# JPEG can decode at 1/2, 1/4 or 1/8 scale in the DCT domain, far cheaper than a full
# decode followed by a resize.
_DCT_RATIOS = (1, 2, 4, 8)
DCT_RATIOS = _DCT_RATIOS


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


def resize(image, img_dim):
    """Resizes an image (or batch) to img_dim x img_dim, float32 in 0..255."""
    image = tf.image.resize(tf.cast(image, tf.float32), [img_dim, img_dim],
                            method="bilinear", antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def decode_and_resize(jpeg, img_dim):
    """Evaluation and serving preprocessing: JPEG bytes -> float32 [img_dim, img_dim, 3], 0..255."""
    return resize(decode_jpeg_at_least(jpeg, img_dim), img_dim)
