"""Training-time image augmentation: random crops, flips, brightness/contrast, light blur.

Every op is stateless: it takes an explicit `seed` (shape [2] integer tensor), so the
same seed gives the same result eagerly and inside `tf.data`, and the tests can check
both. The crop that happens at decode time works on one image; the cheap photometric
ops work on a whole batch at once, because one op per batch costs far less in
`tf.data` than one per image.
"""

import dataclasses
import math

import tensorflow as tf

from agetf import image_ops

_FULL_IMAGE_BOX = (((0.0, 0.0, 1.0, 1.0),),)
# 3x3 binomial kernel: the lightest blur that still softens JPEG blocking and focus.
_BLUR_1D = (0.25, 0.5, 0.25)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """How strongly to augment training images; the defaults are mild, face-preserving."""

    flip: bool = True
    crop_scale: tuple[float, float] = (0.8, 1.0)  # area fraction of the random crop
    crop_aspect: tuple[float, float] = (0.9, 1.1)  # width / height of the random crop
    brightness: float = 0.15  # max delta as a fraction of 255
    contrast: tuple[float, float] = (0.8, 1.2)
    blur_probability: float = 0.1  # light 3x3 blur

    def __post_init__(self):
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        low, high = self.crop_aspect
        if not 0 < low <= high:
            raise ValueError(f"crop_aspect must satisfy 0 < low <= high, got {self.crop_aspect}")
        low, high = self.contrast
        if not 0 <= low <= high:
            raise ValueError(f"contrast must satisfy 0 <= low <= high, got {self.contrast}")
        if not 0 <= self.brightness <= 1:
            raise ValueError(f"brightness must be in [0, 1], got {self.brightness}")
        if not 0 <= self.blur_probability <= 1:
            raise ValueError(f"blur_probability must be in [0, 1], got {self.blur_probability}")


NO_AUGMENTATION = AugmentConfig(flip=False, crop_scale=(1.0, 1.0), crop_aspect=(1.0, 1.0),
                                brightness=0.0, contrast=(1.0, 1.0), blur_probability=0.0)


def split_seed(seed, num):
    """Splits one stateless seed into `num` independent seeds, shape [num, 2]."""
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num)


def sample_crop_window(image_shape, config, seed):
    """Samples a random crop of an image of shape [height, width, ...].

    Returns int32 (offset_y, offset_x, height, width); the whole image when no crop with
    the configured area and aspect ratio fits.
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_size=tf.cast(image_shape, tf.int32),
        bounding_boxes=tf.constant(_FULL_IMAGE_BOX, tf.float32),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=config.crop_aspect,
        area_range=config.crop_scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    return begin[0], begin[1], size[0], size[1]


def decode_and_random_crop(jpeg, img_dim, config, seed):
    """Decodes only a random crop of a JPEG, as small as the DCT allows, then resizes it.

    Returns float32 [img_dim, img_dim, 3] in 0..255. Fusing the crop into the decode
    skips the pixels outside it; DCT-domain downscaling skips most of the rest when the
    crop is at least twice img_dim.
    """
    offset_y, offset_x, height, width = sample_crop_window(
        tf.io.extract_jpeg_shape(jpeg), config, seed)
    index = image_ops.dct_ratio_index(height, width, img_dim)

    def decode_at(ratio):
        # decode_and_crop_jpeg takes the window in the coordinates of the scaled image.
        window = tf.stack([offset_y // ratio, offset_x // ratio, height // ratio, width // ratio])
        return tf.io.decode_and_crop_jpeg(jpeg, window, channels=3, ratio=ratio,
                                          dct_method="INTEGER_FAST")

    branches = [lambda r=ratio: decode_at(r) for ratio in image_ops.DCT_RATIOS]
    image = tf.switch_case(index, branches)
    image.set_shape([None, None, 3])
    return image_ops.resize(image, img_dim)


def cache_dim(img_dim, config):
    """Side of the square images kept in a cache: the smallest crop still covers img_dim."""
    smallest_side = math.sqrt(config.crop_scale[0] * min(config.crop_aspect[0],
                                                         1.0 / config.crop_aspect[1], 1.0))
    return int(math.ceil(img_dim / smallest_side))


def sample_crop_boxes(batch_size, config, seed):
    """Samples one normalized crop box [y1, x1, y2, x2] per image of a batch (vectorized).

    Area and aspect ratio are uniform in the configured ranges; a box that would not fit
    keeps its aspect ratio and shrinks until it does.
    """
    area_seed, aspect_seed, offset_seed = tf.unstack(split_seed(seed, 3))
    area = tf.random.stateless_uniform([batch_size], area_seed, *config.crop_scale)
    aspect = tf.random.stateless_uniform([batch_size], aspect_seed, *config.crop_aspect)
    height = tf.sqrt(area / aspect)
    width = tf.sqrt(area * aspect)
    overflow = tf.maximum(tf.maximum(height, width), 1.0)
    height, width = height / overflow, width / overflow
    offsets = tf.random.stateless_uniform([batch_size, 2], offset_seed)
    y1 = offsets[:, 0] * (1.0 - height)
    x1 = offsets[:, 1] * (1.0 - width)
    return tf.stack([y1, x1, y1 + height, x1 + width], axis=1)


def random_crop_batch(images, img_dim, config, seed):
    """Random crops of a batch of equal-size images, each resized to img_dim (one op)."""
    batch_size = tf.shape(images)[0]
    boxes = sample_crop_boxes(batch_size, config, seed)
    crops = tf.image.crop_and_resize(tf.cast(images, tf.float32), boxes,
                                     tf.range(batch_size), [img_dim, img_dim])
    return tf.clip_by_value(crops, 0.0, 255.0)


def _per_image_mask(images, probability, seed):
    draws = tf.random.stateless_uniform([tf.shape(images)[0]], seed)
    return (draws < probability)[:, tf.newaxis, tf.newaxis, tf.newaxis]


def random_flip(images, seed):
    """Mirrors each image of a batch left-right with probability 1/2."""
    return tf.where(_per_image_mask(images, 0.5, seed), tf.reverse(images, axis=[2]), images)


def random_brightness_contrast(images, seed, brightness, contrast):
    """Scales each image's contrast around its channel means, then shifts its brightness.

    `brightness` is the largest shift as a fraction of 255, `contrast` the (low, high)
    range of the factor; results stay in 0..255.
    """
    batch_size = tf.shape(images)[0]
    delta_seed, factor_seed = tf.unstack(split_seed(seed, 2))
    delta = tf.random.stateless_uniform([batch_size, 1, 1, 1], delta_seed,
                                        -brightness * 255.0, brightness * 255.0)
    factor = tf.random.stateless_uniform([batch_size, 1, 1, 1], factor_seed, *contrast)
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.clip_by_value((images - mean) * factor + mean + delta, 0.0, 255.0)


def blur(images):
    """Light 3x3 binomial blur of a batch; edges are mirrored so they don't darken."""
    kernel_1d = tf.constant(_BLUR_1D, images.dtype)
    kernel = kernel_1d[:, tf.newaxis] * kernel_1d[tf.newaxis, :]
    kernel = tf.tile(kernel[:, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    return tf.nn.depthwise_conv2d(padded, kernel, strides=[1, 1, 1, 1], padding="VALID")


def random_blur(images, seed, probability):
    """Blurs each image of a batch with the given probability."""
    return tf.where(_per_image_mask(images, probability, seed), blur(images), images)


def augment_batch(images, config, seed):
    """Applies the photometric and flip augmentations of `config` to a float32 batch."""
    flip_seed, color_seed, blur_seed = tf.unstack(split_seed(seed, 3))
    if config.flip:
        images = random_flip(images, flip_seed)
    if config.brightness > 0 or tuple(config.contrast) != (1.0, 1.0):
        images = random_brightness_contrast(images, color_seed, config.brightness,
                                            config.contrast)
    if config.blur_probability > 0:
        images = random_blur(images, blur_seed, config.blur_probability)
    return images
