"""Training-time augmentation of whole batches on the accelerator: crop, flip, resize, colour, blur.

The input pipeline hands the training step uint8 images decoded at a fixed size (the
"canvas", see `image_ops.plan_canvas`), and nothing else: on two cores a per-image
bilinear resize to 128 px costs a quarter of a JPEG decode and a per-image flip nearly a
whole one, so doing them on the CPU caps the pipeline far below the decode rate. Here
every image of the batch gets its own random crop, flip, resize and occasional light blur
in two batched matrix products (a separable, antialiased bilinear filter as interpolation
matrices: XLA- and TPU-friendly, unlike CropAndResize), then an occasional grey and
colour jitter. A crop box may be larger than the image (zoom out, `crop_scale` above 1):
the face then appears smaller inside a mirrored border, as in a loosely framed or
misaligned photo.

Every op is stateless: `augment_batch(images, ..., seed)` gives the same result for the
same seed eagerly, inside `tf.function` and inside `tf.data`, and the trainer derives the
seed from the run seed, the global step and the replica, so a resumed run augments the
same way and no two replicas share a crop.
"""

import math

import tensorflow as tf

__all__ = ["augment_batch", "min_crop_side"]

# 3x3 binomial kernel: the lightest blur that still softens JPEG blocking and focus.
_BLUR_1D = (0.25, 0.5, 0.25)
# Columns of the per-image uniform draws.
_AREA, _ASPECT, _OFFSET_Y, _OFFSET_X, _FLIP, _CONTRAST, _BRIGHTNESS, _BLUR = range(8)
# The grey coin is drawn from its own stream (the seed folded with this), so turning it on
# leaves every other draw, and so every crop of a seed, as it was.
_GREY_STREAM = 1
# ITU-R BT.601 luma weights of R, G, B.
_LUMA = (0.299, 0.587, 0.114)


def min_crop_side(config):
    """The shortest side of any crop, as a fraction of the image side it is cut from (above 1
    when every crop is larger than the image: zoomed out, the image needs fewer pixels)."""
    return math.sqrt(config.crop_scale[0] * min(config.crop_aspect[0], 1.0 / config.crop_aspect[1],
                                                1.0))


def crop_boxes(draws, config):
    """Random crops (y, x, h, w) as fractions of each image, from uniform draws [B, 8].

    Area fraction uniform in crop_scale; log aspect uniform in crop_aspect, relative to
    the image's own (the model squashes every image to a square, evaluation included, so
    aspect 1 keeps the proportions evaluation sees). The offset is uniform over the room
    left, or, for a side longer than the image's, over the room it overhangs (centred on
    average). Sides are clipped to the image unless crop_scale reaches above 1 (zoom out).
    """
    area_low, area_high = config.crop_scale
    area = area_low + (area_high - area_low) * draws[:, _AREA]
    log_low, log_high = math.log(config.crop_aspect[0]), math.log(config.crop_aspect[1])
    aspect = tf.exp(log_low + (log_high - log_low) * draws[:, _ASPECT])
    h, w = tf.sqrt(area / aspect), tf.sqrt(area * aspect)
    if area_high <= 1:
        h, w = tf.minimum(h, 1.0), tf.minimum(w, 1.0)
    return draws[:, _OFFSET_Y] * (1.0 - h), draws[:, _OFFSET_X] * (1.0 - w), h, w


def fold_into_image(position, size):
    """Sampling positions [B, out] (input pixels, half-pixel centres) moved into 0..size-1.

    A position beyond the image's edge is mirrored about that edge (the edge pixel repeated,
    as tf.pad's SYMMETRIC), as often as it takes; every position is then clamped to the
    outermost pixel centres like tf.image.resize, so a box inside the image samples exactly
    what it did before zooming out existed.
    """
    period = 2.0 * size
    edge_coordinate = tf.math.floormod(position + 0.5, period)  # the image spans 0..size
    mirrored = tf.minimum(edge_coordinate, period - edge_coordinate) - 0.5
    outside = (position < -0.5) | (position > size - 0.5)
    return tf.clip_by_value(tf.where(outside, mirrored, position), 0.0, size - 1.0)


def interpolation_weights(start, length, size, out_dim, flip=None):
    """Row-stochastic matrices [B, out_dim, size] that resample a span of `size` pixels.

    Output pixel i of image b samples position start[b] + (i + 0.5) * length[b] / out_dim
    (in input pixels, half-pixel centres; beyond the image mirrored, see `fold_into_image`)
    with a triangle filter, widened by the downscale factor so shrinking does not alias (the
    `antialias=True` bilinear of tf.image.resize). `flip` [B] bool mirrors the output.
    """
    i = tf.range(out_dim, dtype=tf.float32)[tf.newaxis, :]
    if flip is not None:
        i = tf.where(flip[:, tf.newaxis], out_dim - 1.0 - i, i)
    scale = (length / out_dim)[:, tf.newaxis]
    position = fold_into_image(start[:, tf.newaxis] + (i + 0.5) * scale - 0.5, size)
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

    A box may reach beyond the image, whose mirror image fills the rest. `flip` [B] bool
    mirrors, `blurred` [B] bool adds the light blur; float32 out.
    """
    height, width = images.shape[1], images.shape[2]
    y, x, h, w = boxes
    rows = interpolation_weights(y * height, h * height, height, img_dim)
    cols = interpolation_weights(x * width, w * width, width, img_dim, flip)
    if blurred is not None:
        rows, cols = blur_weights(rows, blurred), blur_weights(cols, blurred)
    return resample(images, rows, cols)


def grey(images, greyed):
    """Images [B, H, W, 3] float32, where `greyed` [B]: luminance in all three channels."""
    luminance = tf.reduce_sum(images * tf.constant(_LUMA), axis=3, keepdims=True)
    return tf.where(greyed[:, tf.newaxis, tf.newaxis, tf.newaxis], luminance, images)


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

    Each image gets its own crop, flip, grey and blur coins and colour jitter, drawn from
    the stateless `seed` (shape [2] integers). With NO_AUGMENTATION it is a plain
    antialiased resize of the whole image.
    """
    seed = tf.cast(seed, tf.int64)
    draws = tf.random.stateless_uniform([tf.shape(images)[0], 8], seed)
    boxes = crop_boxes(draws, config)
    flip = draws[:, _FLIP] < 0.5 if config.flip else None
    blurred = draws[:, _BLUR] < config.blur_probability if config.blur_probability > 0 else None
    images = crop_and_resize(images, boxes, img_dim, flip, blurred)
    if config.grey_probability > 0:
        grey_seed = tf.random.experimental.stateless_fold_in(seed, _GREY_STREAM)
        images = grey(images, tf.random.stateless_uniform([tf.shape(images)[0]], grey_seed)
                      < config.grey_probability)
    return colour(images, draws, config)
