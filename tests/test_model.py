"""The Keras model: heads and their outputs, preprocessing, validation, weights, fine-tuning."""

import h5py
import keras
import numpy as np
import pytest

from agetf.common import head_names
from agetf.modeling import model as model_lib
from agetf.modeling import model_config

from tiny_runs import calibrate_batchnorm  # pytest puts tests/ on sys.path

IMG_DIM = 32


def tiny_model(heads=head_names.HEADS, backbone="MobileNetV2", **kwargs):
    alpha = 0.35 if backbone == "MobileNetV2" else 1.0
    return model_lib.build_model(backbone=backbone, img_dim=IMG_DIM, heads=heads, alpha=alpha,
                                 **kwargs)


def random_images(count=3, seed=0):
    shape = (count, IMG_DIM, IMG_DIM, 3)
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


@pytest.fixture(scope="module")
def mobilenet():
    model = tiny_model()
    calibrate_batchnorm(model, random_images(8, seed=1))
    return model


def test_outputs_are_a_dict_of_all_heads_with_the_right_shapes(mobilenet):
    outputs = mobilenet(random_images())
    assert list(outputs) == list(head_names.HEADS)
    assert outputs["age_histogram"].shape == (3, 101)
    assert outputs["age_range"].shape == (3, 17)
    assert outputs["age"].shape == (3,)
    assert outputs["gender"].shape == (3,)
    np.testing.assert_allclose(np.sum(outputs["age_histogram"], axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.sum(outputs["age_range"], axis=-1), 1.0, atol=1e-5)
    gender = np.asarray(outputs["gender"])
    assert np.all((gender > 0) & (gender < 1))
    assert np.ptp(np.asarray(outputs["age"])) > 0, "calibrated model should tell images apart"


@pytest.mark.parametrize("heads", [["gender"], ["age"], ["gender", "age_range"],
                                   ["age", "age_histogram"]])
def test_only_requested_heads_in_heads_order(heads):
    model = tiny_model(heads)
    assert list(model(random_images(1))) == [h for h in head_names.HEADS if h in heads]
    assert {layer.name for layer in model.layers if layer.name in head_names.HEADS} == set(heads)


@pytest.mark.parametrize("backbone,preprocess", [
    ("MobileNetV2", keras.applications.mobilenet_v2.preprocess_input),
    ("ResNet50", keras.applications.resnet50.preprocess_input),
])
def test_preprocessing_layer_matches_keras_applications(backbone, preprocess):
    model = tiny_model(["age"], backbone=backbone)
    images = random_images()
    ours = model.get_layer("preprocess")(images)
    np.testing.assert_allclose(np.asarray(ours), preprocess(images.copy()), atol=1e-4)


def test_heads_compute_in_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("backbone").compute_dtype == "float16"
    for head in head_names.HEADS:
        assert model.get_layer(head).compute_dtype == "float32"
    outputs = model(random_images(2))
    assert {name: keras.backend.standardize_dtype(value.dtype)
            for name, value in outputs.items()} == {
        head: "float32" for head in head_names.HEADS}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", model_config.BACKBONES)
def test_keras_file_round_trips_in_safe_mode(backbone, tmp_path):
    model = tiny_model(backbone=backbone)
    images = random_images(4)
    calibrate_batchnorm(model, images)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    expected, got = model(images), loaded(images)
    assert list(got) == list(expected)
    for head in expected:
        np.testing.assert_allclose(np.asarray(got[head]), np.asarray(expected[head]), atol=1e-6)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(backbone="VGG16"), "--base_model=VGG16 is unknown"),
    (dict(heads=["age", "height"]), "--heads must be a non-empty list"),
    (dict(heads=[]), "--heads must be a non-empty list"),
    (dict(img_dim=31), "--img_dim=32"),
    (dict(alpha=0.4), "alpha 0.4 is not a MobileNetV2 width"),
    (dict(backbone="ResNet50", alpha=0.5), "MobileNetV2 only"),
    (dict(weights="/nonexistent/weights.h5"), "--weights=none"),
    (dict(dropout=1.0), "dropout"),
])
def test_bad_settings_raise_one_line_errors(kwargs, needle):
    settings = dict(backbone="MobileNetV2", img_dim=IMG_DIM, heads=["age"], alpha=0.35)
    settings.update(kwargs)
    with pytest.raises(ValueError, match=needle) as error:
        model_lib.build_model(**settings)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("backbone", model_config.BACKBONES)
def test_min_img_dim_is_the_backbones_own_minimum(backbone):
    smallest = model_lib.min_img_dim(backbone)
    model_lib.build_model(backbone=backbone, img_dim=smallest, heads=["age"])
    with pytest.raises(ValueError, match=f"at least {smallest}"):  # Keras' own check agrees
        getattr(keras.applications, backbone)(input_shape=(smallest - 1, smallest - 1, 3),
                                              include_top=False, weights=None)


def test_imagenet_offline_fails_fast_naming_file_and_alternatives(monkeypatch, tmp_path):
    monkeypatch.setattr(model_lib, "keras_cache_dir", lambda: str(tmp_path))
    monkeypatch.setattr(model_lib, "_can_reach_weights_host", lambda: False)
    with pytest.raises(model_lib.WeightsUnavailableError) as error:
        tiny_model(["age"], weights="imagenet")
    message = str(error.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5" in message
    assert "--weights=none" in message and "--weights=/path/to/file.h5" in message
    assert "\n" not in message


def test_failed_download_is_a_weights_error(monkeypatch, tmp_path):
    def fail(*args, **kwargs):
        raise Exception("URL fetch failure on https://...: None -- unreachable")

    monkeypatch.setattr(model_lib, "keras_cache_dir", lambda: str(tmp_path))
    monkeypatch.setattr(model_lib, "_can_reach_weights_host", lambda: True)
    monkeypatch.setattr(keras.utils, "get_file", fail)
    with pytest.raises(model_lib.WeightsUnavailableError, match="resnet50_weights.*--weights=none"):
        tiny_model(["age"], backbone="ResNet50", weights="imagenet")


def test_real_connectivity_check_returns_quickly_either_way():
    assert model_lib._can_reach_weights_host() in (True, False)


def test_imagenet_weights_file_names_follow_keras_applications():
    name = model_lib.imagenet_weights_file_name
    assert name("MobileNetV2", 128, 1.0) == (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5")
    assert name("MobileNetV2", 100, 0.5) == (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5")
    assert name("ResNet50", 64) == "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def test_imagenet_weights_load_from_the_keras_cache(monkeypatch, tmp_path):
    from keras.src.legacy.saving import legacy_h5_format

    donor = tiny_model(["age"]).get_layer("backbone")
    donor.set_weights([np.random.default_rng(3).normal(size=w.shape).astype("float32")
                       for w in donor.get_weights()])
    file_name = model_lib.imagenet_weights_file_name("MobileNetV2", IMG_DIM, 0.35)
    with h5py.File(tmp_path / file_name, "w") as f:  # the format Keras' published files use
        legacy_h5_format.save_weights_to_hdf5_group(f, donor)
    monkeypatch.setattr(model_lib, "keras_cache_dir", lambda: str(tmp_path))
    monkeypatch.setattr(model_lib, "_can_reach_weights_host",
                        lambda: pytest.fail("must not go online when the file is cached"))
    model = tiny_model(["age"], weights="imagenet")
    for ours, theirs in zip(model.get_layer("backbone").get_weights(), donor.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_backbone_layers_are_in_order_and_hold_the_default_prefixes():
    for backbone in model_config.BACKBONES:
        model = tiny_model(["age"], backbone=backbone)
        names = [layer.name for layer in model_lib.backbone_layers(model)]
        assert names[0] in ("Conv1", "conv1_pad")
        assert names[-1] in ("out_relu", "conv5_block3_out")
        assert any(n.startswith(model_config.DEFAULT_UNFREEZE_FROM[backbone]) for n in names)
        assert not any(isinstance(layer, keras.layers.InputLayer)
                       for layer in model_lib.backbone_layers(model))


def _trainable_layer_names(model):
    return [layer.name for layer in model_lib.backbone_layers(model) if layer.trainable_weights]


def test_set_trainable_freezes_all_then_unfreezes_from_prefix(mobilenet):
    try:
        model_lib.set_trainable(mobilenet, unfreeze_from=None)
        assert _trainable_layer_names(mobilenet) == []
        head_weights = {w.path for w in mobilenet.trainable_weights}
        assert head_weights and all(not p.startswith("backbone") for p in head_weights)

        model_lib.set_trainable(mobilenet, unfreeze_from="block_16_")
        assert _trainable_layer_names(mobilenet) == [
            "block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"]

        model_lib.set_trainable(mobilenet, unfreeze_from="")
        layers = model_lib.backbone_layers(mobilenet)
        for layer in layers:
            is_norm = isinstance(layer, keras.layers.BatchNormalization)
            assert layer.trainable != is_norm, layer.name
    finally:
        model_lib.unfreeze_all(mobilenet)


def test_unfreezing_keeps_batchnorm_in_inference_mode(mobilenet):
    # bn_Conv1 sees the preprocessed images directly, so halving them moves its batch mean.
    norm = mobilenet.get_layer("backbone").get_layer("bn_Conv1")
    try:
        model_lib.set_trainable(mobilenet, unfreeze_from="")
        before = keras.ops.convert_to_numpy(norm.moving_mean)
        mobilenet(random_images(4, seed=9) * 0.5, training=True)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(norm.moving_mean), before)
    finally:
        model_lib.unfreeze_all(mobilenet)
    assert all(layer.trainable for layer in model_lib.backbone_layers(mobilenet))
    mobilenet(random_images(4, seed=9) * 0.5, training=True)
    moved = keras.ops.convert_to_numpy(norm.moving_mean)
    assert not np.array_equal(moved, before), "control: a trainable BatchNormalization moves"
    calibrate_batchnorm(mobilenet, random_images(8, seed=1))


def test_train_batchnorm_unfreezes_the_norms_after_the_unfreeze_point_only(mobilenet):
    backbone = mobilenet.get_layer("backbone")
    late, early = backbone.get_layer("block_16_project_BN"), backbone.get_layer("bn_Conv1")
    try:
        model_lib.set_trainable(mobilenet, unfreeze_from="block_16_", train_batchnorm=True)
        assert late.trainable and not early.trainable
        assert _trainable_layer_names(mobilenet) == [
            "block_16_expand", "block_16_expand_BN", "block_16_depthwise",
            "block_16_depthwise_BN", "block_16_project", "block_16_project_BN", "Conv_1",
            "Conv_1_bn"]
        # A training BatchNorm normalizes by the batch and moves its moving averages.
        before = keras.ops.convert_to_numpy(late.moving_mean)
        mobilenet(random_images(4, seed=9) * 0.5, training=True)
        assert not np.array_equal(keras.ops.convert_to_numpy(late.moving_mean), before)
    finally:
        model_lib.unfreeze_all(mobilenet)
        calibrate_batchnorm(mobilenet, random_images(8, seed=1))


def test_unfreeze_all_undoes_a_partial_freeze_even_when_the_model_flag_is_set(mobilenet):
    model_lib.set_trainable(mobilenet, unfreeze_from="block_16_")
    assert mobilenet.trainable  # the outer flag alone says nothing about the backbone
    model_lib.unfreeze_all(mobilenet)
    assert all(layer.trainable for layer in model_lib.backbone_layers(mobilenet))


def test_unknown_unfreeze_prefix_names_the_fix(mobilenet):
    with pytest.raises(ValueError, match="no backbone layer name starts with 'conv9_'.*Conv1"):
        model_lib.set_trainable(mobilenet, unfreeze_from="conv9_")
