"""Batch augmentation and canvas decoding: eagerly, in tf.function and in tf.data, distributions
checked."""

import numpy as np
import pytest
import tensorflow as tf

from agetf import UsageError
from agetf.data import augment, image_ops
from agetf.data.input_config import NO_AUGMENTATION, AugmentConfig

BATCH = 400  # images per batch where a rate or a distribution is checked


def _ramp_batch(batch, size=24):
    """Left-to-right ramps in 40..215 (uint8): a flip is visible, moderate shifts never clip."""
    ramp = np.linspace(40.0, 215.0, size)
    image = np.broadcast_to(ramp[np.newaxis, :, np.newaxis], (size, size, 3))
    return tf.constant(np.broadcast_to(image, (batch, size, size, 3)).round().astype(np.uint8))


def _noise_batch(batch, height=40, width=50, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (batch, height, width, 3)), tf.uint8)


def _three_ways(images, img_dim, config, seed):
    """augment_batch eagerly, in a tf.function and in a tf.data map over the batch."""
    eager = augment.augment_batch(images, img_dim, config, seed).numpy()
    traced = tf.function(lambda x: augment.augment_batch(x, img_dim, config, seed))(images).numpy()
    dataset = tf.data.Dataset.from_tensors(images).map(
        lambda x: augment.augment_batch(x, img_dim, config, seed))
    in_data = next(iter(dataset)).numpy()
    return eager, traced, in_data


def _only(**fields):
    """A config that does only the named augmentations."""
    return AugmentConfig(**{**vars(NO_AUGMENTATION), **fields})


@pytest.mark.slow
def test_same_seed_same_batch_eagerly_traced_and_in_tf_data():
    images = _noise_batch(16)
    eager, traced, in_data = _three_ways(images, 20, AugmentConfig(blur_probability=0.5),
                                         [3, 4])
    np.testing.assert_allclose(traced, eager, atol=1e-3)
    np.testing.assert_allclose(in_data, eager, atol=1e-3)
    assert eager.shape == (16, 20, 20, 3) and eager.dtype == np.float32
    assert eager.min() >= 0 and eager.max() <= 255
    other = augment.augment_batch(images, 20, AugmentConfig(), [3, 5]).numpy()
    assert not np.allclose(other, eager)  # another seed, other crops


@pytest.mark.parametrize("height,width,img_dim", [(200, 200, 128), (200, 200, 32), (40, 50, 24),
                                                  (30, 30, 48)])
def test_no_augmentation_is_the_evaluation_resize(height, width, img_dim):
    # Down (antialiased), non-square and up: the train step sees the pixels evaluation sees.
    images = _noise_batch(4, height, width)
    trained = augment.augment_batch(images, img_dim, NO_AUGMENTATION, [0, 0]).numpy()
    evaluated = image_ops.resize(images, img_dim).numpy()
    np.testing.assert_allclose(trained, evaluated, atol=1e-3)


def test_a_box_crops_exactly_that_window():
    images = _noise_batch(3, 40, 50)
    # y 0.25 h 0.5 of 40 rows, x 0.1 w 0.6 of 50 columns: rows 10..29, columns 5..34.
    boxes = [tf.constant([0.25] * 3), tf.constant([0.1] * 3), tf.constant([0.5] * 3),
             tf.constant([0.6] * 3)]
    cropped = augment.crop_and_resize(images, boxes, 16).numpy()
    expected = image_ops.resize(images[:, 10:30, 5:35], 16).numpy()
    # The antialiasing filter of the outermost pixels reaches past the window into the
    # image around it, where a resize of the cut-out window sees its own edge instead.
    np.testing.assert_allclose(cropped[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], atol=1e-3)
    assert np.abs(cropped - expected).mean() < 2.0


def test_flip_rate_is_half_and_a_flip_is_a_mirror():
    images = _ramp_batch(BATCH)
    config = _only(flip=True)
    eager, traced, in_data = _three_ways(images, 24, config, [1, 2])
    np.testing.assert_allclose(in_data, eager, atol=1e-3)
    flipped = eager[:, 0, 0, 0] > eager[:, 0, -1, 0]  # a flipped ramp falls left to right
    assert abs(flipped.mean() - 0.5) < 0.08
    plain = tf.cast(images[0], tf.float32).numpy()
    np.testing.assert_allclose(eager[~flipped], np.broadcast_to(plain, eager[~flipped].shape),
                               atol=1e-3)
    np.testing.assert_allclose(eager[flipped][:, :, ::-1],
                               np.broadcast_to(plain, eager[flipped].shape), atol=1e-3)


def test_crop_boxes_have_the_configured_area_and_aspect_and_stay_inside():
    config = AugmentConfig()
    draws = tf.random.stateless_uniform([BATCH, 8], [5, 6])
    y, x, h, w = (t.numpy() for t in augment.crop_boxes(draws, config))
    assert (np.all(y >= 0) and np.all(x >= 0) and np.all(y + h <= 1 + 1e-6)
            and np.all(x + w <= 1 + 1e-6))
    area = h * w
    assert area.min() >= 0.8 - 1e-4 and area.max() <= 1.0 + 1e-6
    aspect = w / h  # relative to the image's own
    # Crops that would overflow the image are clipped, which moves their aspect towards 1.
    inside = (h < 1) & (w < 1)
    assert aspect[inside].min() >= 0.9 - 1e-3 and aspect[inside].max() <= 1.1 + 1e-3
    assert area.mean() == pytest.approx(0.9, abs=0.02)  # uniform over 0.8..1
    assert len(set(np.round(y, 4))) > BATCH // 2  # the offsets are random


def test_brightness_shift_is_uniform_within_its_bound():
    images = _ramp_batch(BATCH)
    eager = augment.augment_batch(images, 24, _only(brightness=0.15), [7, 8]).numpy()
    shift = (eager - tf.cast(images, tf.float32).numpy()).mean(axis=(1, 2, 3))
    bound = 0.15 * 255
    # The ramp spans 40..215, so shifts up to +-38 never clip: the shift is exact.
    assert np.all(np.abs(shift) <= bound + 1e-2)
    assert abs(shift.mean()) < 3.0
    assert shift.std() == pytest.approx(bound / np.sqrt(3), rel=0.12)  # a uniform distribution


def test_contrast_scales_spread_within_its_range_and_keep_the_mean():
    images = _ramp_batch(BATCH)
    eager = augment.augment_batch(images, 24, _only(contrast=(0.8, 1.2)), [9, 10]).numpy()
    original = tf.cast(images[0], tf.float32).numpy()
    factor = eager.std(axis=(1, 2, 3)) / original.std()
    assert factor.min() >= 0.8 - 1e-3 and factor.max() <= 1.2 + 1e-3
    assert factor.mean() == pytest.approx(1.0, abs=0.03)
    np.testing.assert_allclose(eager.mean(axis=(1, 2, 3)), original.mean(), atol=1e-2)


def test_values_stay_in_range_under_strong_shifts():
    images = _noise_batch(32)
    out = augment.augment_batch(images, 16, _only(brightness=1.0, contrast=(0.0, 3.0)), [1, 1])
    assert out.numpy().min() >= 0 and out.numpy().max() <= 255


def _reference_blur(images):
    kernel_1d = np.array([0.25, 0.5, 0.25], np.float32)
    kernel = np.tile((kernel_1d[:, None] * kernel_1d[None, :])[:, :, None, None], [1, 1, 3, 1])
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID").numpy()


def test_blur_rate_matches_probability_and_blurred_images_are_the_binomial_blur():
    images = _noise_batch(BATCH, 16, 16)
    eager, _, in_data = _three_ways(images, 16, _only(blur_probability=0.3), [11, 12])
    np.testing.assert_allclose(in_data, eager, atol=1e-3)
    sharp = tf.cast(images, tf.float32).numpy()
    blurred = np.abs(eager - sharp).max(axis=(1, 2, 3)) > 1e-3
    assert abs(blurred.mean() - 0.3) < 0.07
    np.testing.assert_allclose(eager[blurred], _reference_blur(sharp[blurred]), atol=1e-3)
    assert eager[blurred].std() < 0.7 * sharp.std()


# -- zoom out and grey -------------------------------------------------------------------

def _gradient(size=20):
    """uint8 [size, size, 3], every pixel unlike its neighbours: a mirror, shift or clamp shows."""
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([10 + 4 * x + 7 * y, 200 - 5 * x + 2 * y, 30 + 9 * y], axis=-1).astype(np.uint8)


def _boxes(y, x, h, w):
    return [tf.constant(np.atleast_1d(value), tf.float32) for value in (y, x, h, w)]


def test_a_box_larger_than_the_image_mirrors_the_image_into_the_border():
    image = _gradient(20)
    # Area 1.44, centred: 24 px of box for 20 of image, 2 px of border each side; resampled
    # to 24 px, one output pixel per input pixel, so every value is exact.
    out = augment.crop_and_resize(tf.constant(image[np.newaxis]), _boxes(-0.1, -0.1, 1.2, 1.2),
                                  24).numpy()[0]
    np.testing.assert_allclose(out, np.pad(image, [(2, 2), (2, 2), (0, 0)], mode="symmetric"),
                               atol=1e-3)


@pytest.mark.parametrize("img_dim", [12, 24, 48])
def test_a_centred_box_of_area_1_44_shows_the_plain_resize_in_its_centre(img_dim):
    images = tf.constant(_gradient(20)[np.newaxis])
    out = augment.crop_and_resize(images, _boxes(-0.1, -0.1, 1.2, 1.2), img_dim).numpy()
    border = img_dim // 12  # (1.2 - 1) / 2 of the box
    plain = image_ops.resize(images, img_dim - 2 * border).numpy()
    np.testing.assert_allclose(out[:, border:-border, border:-border], plain, atol=1e-3)


def _clamped_weights(start, length, size, out_dim, flip=None):
    """interpolation_weights as it was before zooming out: positions clamped to the image."""
    i = tf.range(out_dim, dtype=tf.float32)[tf.newaxis, :]
    if flip is not None:
        i = tf.where(flip[:, tf.newaxis], out_dim - 1.0 - i, i)
    scale = (length / out_dim)[:, tf.newaxis]
    position = tf.clip_by_value(start[:, tf.newaxis] + (i + 0.5) * scale - 0.5, 0.0, size - 1.0)
    support = tf.maximum(scale, 1.0)[:, :, tf.newaxis]
    weights = tf.maximum(0.0, 1.0 - tf.abs(position[:, :, tf.newaxis]
                                           - tf.range(size, dtype=tf.float32)) / support)
    return weights / tf.reduce_sum(weights, axis=2, keepdims=True)


@pytest.mark.parametrize("img_dim", [16, 48, 100])  # down, rows up and columns down, up
def test_a_box_inside_the_image_samples_exactly_as_before_zooming_out(img_dim):
    images = _noise_batch(4, 40, 50)
    # The whole image, one touching the bottom right corner, two anywhere.
    y, x, h, w = _boxes([0.0, 0.5, 0.13, 0.3], [0.0, 0.5, 0.27, 0.05], [1.0, 0.5, 0.6, 0.45],
                        [1.0, 0.5, 0.7, 0.9])
    flip = tf.constant([False, True, False, True])
    expected = augment.resample(images, _clamped_weights(y * 40, h * 40, 40, img_dim),
                                _clamped_weights(x * 50, w * 50, 50, img_dim, flip)).numpy()
    cropped = augment.crop_and_resize(images, (y, x, h, w), img_dim, flip).numpy()
    np.testing.assert_array_equal(cropped, expected)


def test_zoomed_out_boxes_have_the_configured_area_and_cover_the_image_where_longer():
    config = AugmentConfig(crop_scale=(0.8, 1.4))
    draws = tf.random.stateless_uniform([BATCH, 8], [17, 18])
    y, x, h, w = (t.numpy() for t in augment.crop_boxes(draws, config))
    area = h * w
    assert area.min() >= 0.8 - 1e-4 and area.max() <= 1.4 + 1e-4
    assert area.mean() == pytest.approx(1.1, abs=0.02)  # uniform, none clipped
    for start, side in ((y, h), (x, w)):
        longer = side > 1
        assert 0.3 < longer.mean() < 0.8
        assert np.all(start[longer] <= 0) and np.all(start[longer] + side[longer] >= 1 - 1e-6)
        assert np.all(start[~longer] >= 0) and np.all(start[~longer] + side[~longer] <= 1 + 1e-6)
        # centred on average, the offset random
        assert (start[longer] + side[longer] / 2).mean() == pytest.approx(0.5, abs=0.01)
        assert len(set(np.round(start[longer], 4))) > longer.sum() // 2
    assert min(h.min(), w.min()) >= augment.min_crop_side(config) - 1e-4


def test_zoomed_out_and_grey_batches_repeat_eagerly_traced_and_in_tf_data_and_shrink_the_face():
    # A white 10 px square on 20 px of black: boxes of area 1.44 overhang by at most 4 px, so
    # the mirrored border is black and the square shows 1/1.2 as wide as a plain resize shows it.
    square = np.zeros((20, 20, 3), np.uint8)
    square[5:15, 5:15] = 255
    images = tf.constant(np.broadcast_to(square, (16, 20, 20, 3)))
    config = _only(crop_scale=(1.44, 1.44), flip=True, grey_probability=0.5)
    eager, traced, in_data = _three_ways(images, 20, config, [13, 14])
    np.testing.assert_allclose(traced, eager, atol=1e-3)
    np.testing.assert_allclose(in_data, eager, atol=1e-3)
    white_pixels = eager[..., 0].sum(axis=(1, 2)) / 255
    np.testing.assert_allclose(white_pixels, 100 / 1.44, rtol=0.03)  # 100 without zooming out
    assert np.all(eager[:, 9:11, 9:11] > 254) and np.all(eager[:, [0, -1]][:, :, [0, -1]] < 1)
    other = augment.augment_batch(images, 20, config, [13, 15]).numpy()
    assert not np.allclose(other, eager)  # another seed, other offsets


def test_grey_images_are_their_luminance_in_every_channel_at_the_configured_rate():
    images = _noise_batch(BATCH, 8, 8)
    colours = tf.cast(images, tf.float32).numpy()
    luminance = colours @ np.array([0.299, 0.587, 0.114], np.float32)
    eager, _, in_data = _three_ways(images, 8, _only(grey_probability=0.3), [19, 20])
    np.testing.assert_allclose(in_data, eager, atol=1e-3)
    greyed = np.ptp(eager, axis=3).max(axis=(1, 2)) < 1e-3
    assert abs(greyed.mean() - 0.3) < 0.07
    np.testing.assert_allclose(eager[greyed], np.repeat(luminance[greyed][..., np.newaxis], 3, -1),
                               atol=1e-3)
    np.testing.assert_allclose(eager[~greyed], colours[~greyed], atol=1e-3)


def test_grey_comes_after_the_crop_and_before_the_colour_jitter_and_moves_no_crop():
    images = _noise_batch(8, 40, 50)
    crops = dict(flip=True, crop_scale=(0.8, 1.4), blur_probability=0.5)
    coloured = augment.augment_batch(images, 24, _only(**crops), [21, 22]).numpy()
    greyed = augment.augment_batch(images, 24, _only(**crops, grey_probability=1.0), [21, 22])
    np.testing.assert_allclose(greyed.numpy()[..., 0], coloured @ np.array([0.299, 0.587, 0.114]),
                               atol=1e-3)
    jitter = _only(**crops, brightness=0.15, contrast=(0.5, 1.5), grey_probability=1.0)
    jittered = augment.augment_batch(images, 24, jitter, [21, 22]).numpy()
    np.testing.assert_array_equal(jittered[..., 0], jittered[..., 1])
    np.testing.assert_array_equal(jittered[..., 0], jittered[..., 2])
    # Contrast scales around the grey image's mean, not the colour image's.
    draws = tf.random.stateless_uniform([8, 8], tf.constant([21, 22], tf.int64))
    np.testing.assert_allclose(jittered, augment.colour(greyed, draws, jitter).numpy(), atol=1e-3)
    assert np.ptp(coloured, axis=3).mean() > 10  # grey_probability=0 (the default) keeps colour


# -- canvases ----------------------------------------------------------------------------

@pytest.mark.parametrize("sizes,img_dim,expected", [
    ([(200, 200)], 128, image_ops.Canvas(200, 200, 1)),  # 100 px at 1/2 would be too small
    ([(200, 200)], 64, image_ops.Canvas(100, 100, 2)),
    ([(200, 200)], 32, image_ops.Canvas(50, 50, 4)),
    ([(201, 150)], 32, image_ops.Canvas(51, 38, 4)),  # libjpeg rounds scaled sizes up
    ([(100, 100)], 128, image_ops.Canvas(100, 100, 1)),  # smaller than img_dim: upscaled later
    ([(200, 200), (180, 200)], 64, image_ops.Canvas(76, 76, None)),  # mixed: resized square
    ([], 64, image_ops.Canvas(76, 76, None)),  # unknown (an old report)
])
def test_canvas_plans(sizes, img_dim, expected):
    assert image_ops.plan_canvas(sizes, img_dim, augment.min_crop_side(AugmentConfig())) \
        == expected


@pytest.mark.parametrize("img_dim", [32, 64, 128])
def test_the_smallest_crop_of_a_canvas_still_covers_img_dim(img_dim):
    config = AugmentConfig()
    canvas = image_ops.plan_canvas([(200, 200)], img_dim, augment.min_crop_side(config))
    # The smallest area with either extreme aspect ratio.
    draws = tf.constant([[0.0, 0.0] + [0.5] * 6, [0.0, 1.0] + [0.5] * 6])
    _, _, h, w = augment.crop_boxes(draws, config)
    assert min(h.numpy().min() * canvas.height, w.numpy().min() * canvas.width) >= img_dim - 1e-3


def test_decode_to_canvas_eagerly_and_in_tf_data():
    rng = np.random.default_rng(3)
    jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (201, 150, 3)).astype(np.uint8))
    for canvas in (image_ops.Canvas(51, 38, 4), image_ops.Canvas(40, 40, None)):
        eager = image_ops.decode_to_canvas(jpeg, canvas)
        in_data = next(iter(tf.data.Dataset.from_tensors(jpeg).map(
            lambda j, c=canvas: image_ops.decode_to_canvas(j, c))))
        assert eager.dtype == tf.uint8 and eager.shape == (canvas.height, canvas.width, 3)
        np.testing.assert_array_equal(eager.numpy(), in_data.numpy())


def test_a_record_of_another_size_than_the_report_says_fails_loudly():
    jpeg = tf.io.encode_jpeg(tf.zeros([60, 60, 3], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="shape"):
        image_ops.decode_to_canvas(jpeg, image_ops.Canvas(50, 50, 1))


@pytest.mark.parametrize("field,value", [
    ("crop_scale", (0.0, 1.0)), ("crop_scale", (0.9, 0.8)), ("crop_aspect", (1.2, 1.1)),
    ("contrast", (-1.0, 1.0)), ("brightness", 2.0), ("blur_probability", 1.5)])
def test_config_rejects_bad_ranges(field, value):
    with pytest.raises(ValueError, match=field):
        AugmentConfig(**{field: value})


@pytest.mark.parametrize("fields,message", [
    ({"crop_scale": (0, 1)}, "--crop_scale=0,1 must be LOW,HIGH with 0 < LOW <= HIGH <= 2"),
    ({"crop_scale": (1.2, 1.1)}, "--crop_scale=1.2,1.1 must"),
    ({"crop_scale": (0.8, 2.5)}, "--crop_scale=0.8,2.5 must"),
    ({"crop_scale": (0.8,)}, "--crop_scale=0.8 must"),
    ({"crop_scale": (0.5, 1.0, 1.5)}, "--crop_scale=0.5,1,1.5 must"),
    ({"crop_scale": (float("nan"), 1.0)}, "--crop_scale=nan,1 must"),
    ({"grey_probability": -0.1}, r"--grey_probability=-0.1 must be in \[0, 1\]"),
    ({"grey_probability": 1.5}, r"--grey_probability=1.5 must be in \[0, 1\]")])
def test_config_names_the_flag_of_a_bad_zoom_or_grey_in_one_line(fields, message):
    with pytest.raises(UsageError, match=message) as error:
        AugmentConfig(**fields)
    assert "\n" not in str(error.value)


def test_config_accepts_the_ends_of_the_zoom_and_grey_ranges():
    config = AugmentConfig(crop_scale=(2.0, 2.0), grey_probability=1.0)
    assert augment.min_crop_side(config) > 1  # every crop larger than the image
    AugmentConfig(crop_scale=(0.01, 0.01), grey_probability=0.0)
