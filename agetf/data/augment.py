"""Training-time augmentation of whole batches on the accelerator: crop, flip, resize, colour, blur.

The input pipeline hands the training step uint8 images decoded at a fixed size (the
"canvas", see `image_ops.plan_canvas`), and nothing else: on two cores a per-image
bilinear resize to 128 px costs a quarter of a JPEG decode and a per-image flip nearly a
whole one, so doing them on the CPU caps the pipeline far below the decode rate. Here every image of the
batch gets its own random crop, flip, resize and occasional light blur in two batched
matrix products (a separable, antialiased bilinear filter as interpolation matrices:
XLA- and TPU-friendly, unlike CropAndResize), then colour jitter.

Every op is stateless: `augment_batch(images, ..., seed)` gives the same result for the
same seed eagerly, inside `tf.function` and inside `tf.data`, and the trainer derives the
seed from the run seed, the global step and the replica, so a resumed run augments the
same way and no two replicas share a crop.
"""

import math

import tensorflow as tf

from agetf.config import NO_AUGMENTATION, AugmentConfig

__all__ = ["NO_AUGMENTATION", "AugmentConfig", "augment_batch", "min_crop_side"]

# 3x3 binomial kernel: the lightest blur that still softens JPEG blocking and focus.
_BLUR_1D = (0.25, 0.5, 0.25)
# Columns of the per-image uniform draws.
_AREA, _ASPECT, _OFFSET_Y, _OFFSET_X, _FLIP, _CONTRAST, _BRIGHTNESS, _BLUR = range(8)


def min_crop_side(config):
    """The shortest side of any crop, as a fraction of the image side it is cut from."""
    return math.sqrt(config.crop_scale[0] * min(config.crop_aspect[0], 1.0 / config.crop_aspect[1],
                                                1.0))


def crop_boxes(draws, config):
    """Random crops (y, x, h, w) as fractions of each image, from uniform draws [B, 8].

    Area fraction uniform in crop_scale; log aspect uniform in crop_aspect, relative to
    the image's own (the model squashes every image to a square, evaluation included, so
    aspect 1 keeps the proportions evaluation sees); clipped to the image; the offset is
    uniform over the room left.
    """
    area_low, area_high = config.crop_scale
    area = area_low + (area_high - area_low) * draws[:, _AREA]
    log_low, log_high = math.log(config.crop_aspect[0]), math.log(config.crop_aspect[1])
    aspect = tf.exp(log_low + (log_high - log_low) * draws[:, _ASPECT])
    h = tf.minimum(tf.sqrt(area / aspect), 1.0)
    w = tf.minimum(tf.sqrt(area * aspect), 1.0)
    return draws[:, _OFFSET_Y] * (1.0 - h), draws[:, _OFFSET_X] * (1.0 - w), h, w


def interpolation_weights(start, length, size, out_dim, flip=None):
    """Row-stochastic matrices [B, out_dim, size] that resample a span of `size` pixels.

    Output pixel i of image b samples position start[b] + (i + 0.5) * length[b] / out_dim
    (in input pixels, half-pixel centres, clamped to the image like tf.image.resize) with
    a triangle filter, widened by the downscale factor so shrinking does not alias (the
    `antialias=True` bilinear of tf.image.resize). `flip` [B] bool mirrors the output.
    """
    i = tf.range(out_dim, dtype=tf.float32)[tf.newaxis, :]
    if flip is not None:
        i = tf.where(flip[:, tf.newaxis], out_dim - 1.0 - i, i)
    scale = (length / out_dim)[:, tf.newaxis]
    position = tf.clip_by_value(start[:, tf.newaxis] + (i + 0.5) * scale - 0.5, 0.0, size - 1.0)
    support = tf.maximum(scale, 1.0)[:, :, tf.newaxis]
    j = tf.range(size, dtype=tf.float32)
    weights = tf.maximum(0.0, 1.0 - tf.abs(position[:, :, tf.newaxis] - j) / support)
    return weights / tf.reduce_sum(weights, axis=2, keepdims=True)


def blur_weights(weights, blurred):
    """Folds a light 3-tap binomial blur into resampling matrices [B, out, in] where `blurred`.

    Blurring the output rows with (1/4, 1/2, 1/4), edges mirrored, is the same matrix
    applied to the weights; done to both the row and the column matrices it is the 3x3
    binomial blur of the resized image, at no cost per pixel.
    """
    previous = tf.concat([weights[:, :1], weights[:, :-1]], axis=1)
    following = tf.concat([weights[:, 1:], weights[:, -1:]], axis=1)
    smoothed = _BLUR_1D[0] * previous + _BLUR_1D[1] * weights + _BLUR_1D[2] * following
    return tf.where(blurred[:, tf.newaxis, tf.newaxis], smoothed, weights)


def resample(images, rows, cols):
    """images [B, H, W, C] -> [B, out_h, out_w, C] float32: rows [B, out_h, H] x image x cols^T.

    Two batched matrix products (the transposes keep both as plain matmuls, measured
    twice as fast as tf.einsum on a CPU).
    """
    batch, height, width, channels = (tf.shape(images)[0], images.shape[1], images.shape[2],
                                      images.shape[3])
    out_h, out_w = rows.shape[1], cols.shape[1]
    images = tf.reshape(tf.cast(images, tf.float32), [batch, height, width * channels])
    images = tf.reshape(tf.matmul(rows, images), [batch, out_h, width, channels])
    images = tf.reshape(tf.transpose(images, [0, 1, 3, 2]), [batch, out_h * channels, width])
    images = tf.matmul(images, cols, transpose_b=True)
    return tf.transpose(tf.reshape(images, [batch, out_h, channels, out_w]), [0, 1, 3, 2])


def crop_and_resize(images, boxes, img_dim, flip=None, blurred=None):
    """Crops boxes (y, x, h, w fractions, each [B]) of images [B, H, W, C] to img_dim squares.

    `flip` [B] bool mirrors, `blurred` [B] bool adds the light blur; float32 out.
    """
    height, width = images.shape[1], images.shape[2]
    y, x, h, w = boxes
    rows = interpolation_weights(y * height, h * height, height, img_dim)
    cols = interpolation_weights(x * width, w * width, width, img_dim, flip)
    if blurred is not None:
        rows, cols = blur_weights(rows, blurred), blur_weights(cols, blurred)
    return resample(images, rows, cols)


def colour(images, draws, config):
    """Contrast around each image's mean, then a brightness shift; clipped to 0..255."""
    if config.brightness > 0 or tuple(config.contrast) != (1.0, 1.0):
        low, high = config.contrast
        factor = (low + (high - low) * draws[:, _CONTRAST])[:, tf.newaxis, tf.newaxis, tf.newaxis]
        delta = config.brightness * 255.0 * (2.0 * draws[:, _BRIGHTNESS] - 1.0)
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = images * factor + (mean * (1.0 - factor)
                                    + delta[:, tf.newaxis, tf.newaxis, tf.newaxis])
    return tf.clip_by_value(images, 0.0, 255.0)


def augment_batch(images, img_dim, config, seed):
    """uint8 canvases [B, H, W, 3] -> float32 [B, img_dim, img_dim, 3] in 0..255.

    Each image gets its own crop, flip, colour jitter and blur coin, drawn from the
    stateless `seed` (shape [2] integers). With NO_AUGMENTATION it is a plain antialiased
    resize of the whole image.
    """
    draws = tf.random.stateless_uniform([tf.shape(images)[0], 8], tf.cast(seed, tf.int64))
    boxes = crop_boxes(draws, config)
    flip = draws[:, _FLIP] < 0.5 if config.flip else None
    blurred = draws[:, _BLUR] < config.blur_probability if config.blur_probability > 0 else None
    return colour(crop_and_resize(images, boxes, img_dim, flip, blurred), draws, config)
