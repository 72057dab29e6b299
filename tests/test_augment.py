"""Augmentation ops: each one eagerly and inside tf.data, with its distribution checked."""

import numpy as np
import pytest
import tensorflow as tf

from agetf import augment, image_ops

NUM_SEEDS = 40
MANY_SEEDS = 400  # for per-image coin flips


def _ramp(size=16):
    """A left-to-right ramp in 40..215: a flip is visible, moderate shifts never clip."""
    ramp = np.linspace(40.0, 215.0, size, dtype=np.float32)
    return tf.constant(np.broadcast_to(ramp[np.newaxis, :, np.newaxis], (size, size, 3)).copy())


def _eager_and_in_tf_data(op, num_seeds=NUM_SEEDS):
    """Runs op(seed) for num_seeds seeds eagerly and in a tf.data map; returns both stacks."""
    seeds = tf.stack([tf.constant([s, 17], tf.int64) for s in range(num_seeds)])
    eager = np.stack([op(seed).numpy() for seed in seeds])
    dataset = tf.data.Dataset.from_tensor_slices(seeds).map(
        op, num_parallel_calls=tf.data.AUTOTUNE)
    in_data = np.stack([x.numpy() for x in dataset])
    return eager, in_data


def test_flip_rate_is_half_eagerly_and_in_tf_data():
    image = _ramp()
    eager, in_data = _eager_and_in_tf_data(lambda seed: augment.random_flip(image, seed),
                                           MANY_SEEDS)
    np.testing.assert_array_equal(eager, in_data)
    # Flipped ramps decrease left to right.
    flipped = eager[:, 0, 0, 0] > eager[:, 0, -1, 0]
    assert abs(flipped.mean() - 0.5) < 0.08
    np.testing.assert_array_equal(eager[~flipped], np.broadcast_to(image, eager[~flipped].shape))
    np.testing.assert_array_equal(eager[flipped][:, :, ::-1],
                                  np.broadcast_to(image, eager[flipped].shape))


def test_brightness_shift_is_uniform_within_its_bound():
    image = _ramp()
    op = lambda seed: augment.random_brightness_contrast(image, seed, 0.15, (1.0, 1.0))  # noqa: E731
    eager, in_data = _eager_and_in_tf_data(op, MANY_SEEDS)
    np.testing.assert_allclose(eager, in_data, atol=1e-4)
    shift = (eager - image.numpy()[np.newaxis]).mean(axis=(1, 2, 3))
    bound = 0.15 * 255
    # The ramp spans 40..215, so shifts up to +-38 never clip: the shift is exact.
    assert np.all(np.abs(shift) <= bound + 1e-3)
    assert abs(shift.mean()) < 3.0
    assert shift.std() == pytest.approx(bound / np.sqrt(3), rel=0.12)  # uniform distribution
    assert eager.min() >= 0 and eager.max() <= 255


def test_contrast_scales_spread_within_its_range():
    image = _ramp()
    op = lambda seed: augment.random_brightness_contrast(image, seed, 0.0, (0.8, 1.2))  # noqa: E731
    eager, in_data = _eager_and_in_tf_data(op, MANY_SEEDS)
    np.testing.assert_allclose(eager, in_data, atol=1e-4)
    factor = eager.std(axis=(1, 2, 3)) / image.numpy().std()
    assert factor.min() >= 0.8 - 1e-3 and factor.max() <= 1.2 + 1e-3
    assert factor.mean() == pytest.approx(1.0, abs=0.03)
    # Contrast keeps the image's mean.
    np.testing.assert_allclose(eager.mean(axis=(1, 2, 3)), image.numpy().mean(), atol=1e-2)


def test_values_stay_in_range_under_strong_shifts():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.uniform(0, 255, (8, 8, 3)), tf.float32)
    for seed in range(5):
        out = augment.random_brightness_contrast(image, [seed, 2], 1.0, (0.0, 3.0)).numpy()
        assert out.min() >= 0 and out.max() <= 255


def test_blur_keeps_flat_images_and_smooths_noise():
    flat = tf.fill([8, 8, 3], 200.0)
    np.testing.assert_allclose(augment.blur(flat).numpy(), 200.0, atol=1e-4)
    noise = tf.constant(np.random.default_rng(1).uniform(0, 255, (16, 16, 3)), tf.float32)
    blurred = augment.blur(noise).numpy()
    assert blurred.shape == (16, 16, 3)
    assert blurred.std() < 0.7 * noise.numpy().std()


def test_blur_rate_matches_probability_eagerly_and_in_tf_data():
    noise = tf.constant(np.random.default_rng(2).uniform(0, 255, (8, 8, 3)), tf.float32)
    eager, in_data = _eager_and_in_tf_data(lambda seed: augment.random_blur(noise, seed, 0.3),
                                           MANY_SEEDS)
    np.testing.assert_allclose(eager, in_data, atol=1e-4)
    changed = np.abs(eager - noise.numpy()[np.newaxis]).max(axis=(1, 2, 3)) > 1e-3
    assert abs(changed.mean() - 0.3) < 0.07


def test_crop_windows_within_bounds_eagerly_and_in_tf_data():
    config = augment.AugmentConfig()
    op = lambda seed: tf.stack(augment.sample_crop_window([200, 180, 3], config, seed))  # noqa: E731
    eager, in_data = _eager_and_in_tf_data(op)
    np.testing.assert_array_equal(eager, in_data)
    offset_y, offset_x, height, width = eager.T
    assert np.all(offset_y >= 0) and np.all(offset_x >= 0)
    assert np.all(offset_y + height <= 200) and np.all(offset_x + width <= 180)
    area = height * width / (200 * 180)
    assert np.all(area >= 0.8 - 0.02) and np.all(area <= 1.0)
    aspect = width / height
    assert np.all(aspect >= 0.9 - 0.02) and np.all(aspect <= 1.1 + 0.02)
    assert len(set(map(tuple, eager))) > NUM_SEEDS // 2  # it is random


def _smooth_jpeg(height, width):
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (height + width)], -1)
    return tf.io.encode_jpeg(image.astype(np.uint8), quality=95)


def test_uncropped_decode_matches_evaluation_decode():
    jpeg = _smooth_jpeg(200, 200)
    for img_dim in (32, 128):  # DCT ratio 4 and 1
        crop = augment.decode_random_crop(jpeg, img_dim, augment.NO_AUGMENTATION, [0, 0])
        np.testing.assert_array_equal(crop.numpy(), image_ops.decode_jpeg_at_least(jpeg, img_dim))
        train = augment.decode_and_augment(jpeg, img_dim, augment.NO_AUGMENTATION, [0, 0])
        evaluation = image_ops.decode_and_resize(jpeg, img_dim)
        # Training resizes without antialiasing when under 2x: a level or two apart.
        assert np.abs(train.numpy() - evaluation.numpy()).mean() < 2.0


@pytest.mark.parametrize("img_dim", [24, 96])
def test_fused_crop_shows_the_sampled_window(img_dim):
    jpeg = _smooth_jpeg(200, 200)
    config = augment.AugmentConfig(crop_scale=(0.3, 0.5), crop_aspect=(0.5, 2.0))
    full = tf.io.decode_jpeg(jpeg, channels=3)
    for seed in range(5):
        seed = tf.constant([seed, 3], tf.int64)
        crop = augment.decode_random_crop(jpeg, img_dim, config, seed)
        oy, ox, h, w = [int(v) for v in augment.sample_crop_window([200, 200, 3], config, seed)]
        assert min(crop.shape[:2]) >= min(img_dim, h, w)  # DCT never goes below img_dim
        expected = image_ops.resize(full[oy:oy + h, ox:ox + w], img_dim).numpy()
        # DCT downscaling and integer offsets cost a few levels, a wrong window far more.
        assert np.abs(image_ops.resize(crop, img_dim).numpy() - expected).mean() < 6.0


def test_decode_and_augment_inside_tf_data_matches_eager():
    jpeg = _smooth_jpeg(64, 80)
    config = augment.AugmentConfig(blur_probability=0.5)
    op = lambda seed: augment.decode_and_augment(jpeg, 16, config, seed)  # noqa: E731
    eager, in_data = _eager_and_in_tf_data(op)
    np.testing.assert_allclose(eager, in_data, atol=1e-4)
    assert eager.shape == (NUM_SEEDS, 16, 16, 3) and eager.dtype == np.float32
    assert eager.min() >= 0 and eager.max() <= 255
    assert not np.allclose(eager[0], eager[1])
    untouched = augment.augment_crop(tf.cast(_ramp(), tf.uint8), 16, augment.NO_AUGMENTATION,
                                     [0, 1])
    np.testing.assert_array_equal(untouched.numpy(), tf.cast(tf.cast(_ramp(), tf.uint8),
                                                             tf.float32).numpy())


def test_random_crop_of_a_cached_image_within_bounds():
    config = augment.AugmentConfig()
    side = augment.cache_dim(12, config)
    image = tf.cast(_ramp(side), tf.uint8)
    eager, in_data = _eager_and_in_tf_data(
        lambda seed: tf.shape(augment.random_crop(image, config, seed)))
    np.testing.assert_array_equal(eager, in_data)
    assert np.all(eager[:, :2] >= 12) and np.all(eager[:, :2] <= side)
    assert np.all(eager[:, 2] == 3)


def test_cache_dim_leaves_room_for_the_smallest_crop():
    config = augment.AugmentConfig()
    side = augment.cache_dim(128, config)
    assert side > 128
    smallest = side * np.sqrt(config.crop_scale[0] * config.crop_aspect[0])
    assert smallest >= 128


@pytest.mark.parametrize("field,value", [
    ("crop_scale", (0.0, 1.0)), ("crop_scale", (0.9, 0.8)), ("crop_aspect", (1.2, 1.1)),
    ("contrast", (-1.0, 1.0)), ("brightness", 2.0), ("blur_probability", 1.5)])
def test_config_rejects_bad_ranges(field, value):
    with pytest.raises(ValueError, match=field):
        augment.AugmentConfig(**{field: value})
