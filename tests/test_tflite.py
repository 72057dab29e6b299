"""TFLite export: each variant, run by LiteRT's interpreter, predicts what the SavedModel
predicts."""

import inspect
import os
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from agetf.common import head_names
from agetf.data import image_ops, synthetic
from agetf.modeling import model as model_lib
from agetf.serving import crop_batches, export, predictors, signatures, tflite_export

from tiny_runs import calibrate_batchnorm  # pytest puts tests/ on sys.path

IMG_DIM = 64
# 1e-4 years is at float32's noise floor on this untrained model (TF itself moves ages by
# up to 8e-5 between a batch and single images); with seed 0 TFLite differs by 3e-5.
FLOAT32_TOLERANCE_YEARS = 1e-4
MODEL_SEED = 0
# Stated in the README. Measured over 5 seeds: float16 0.05-0.09 years, dynamic int8
# 0.25-1.05 years, on an untrained model so sensitive that +-0.5 grey levels of noise
# move its ages by up to 0.7 years.
SMALL_TOLERANCE_YEARS = {"float16": 0.25, "dynamic_int8": 2.0}


def faces(count, seed):
    """Synthetic faces at IMG_DIM, so BatchNorm sees face-like statistics."""
    return np.stack([synthetic.render_face(20 + 3 * i, i % 2, i % 5,
                                           np.random.default_rng([seed, i]), size=IMG_DIM)
                     for i in range(count)])


def build(policy="float32"):
    """The MobileNetV2 x0.35 of these tests, with every head, built under a dtype policy."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        return model_lib.build_model(backbone="MobileNetV2", img_dim=IMG_DIM,
                                     heads=head_names.HEADS, alpha=0.35)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def calibrated():
    """A calibrated 64px model: untrained BatchNorm in inference mode gives ~0 outputs."""
    keras.utils.set_random_seed(MODEL_SEED)
    model = build()
    calibrate_batchnorm(model, faces(32, seed=1).astype("float32"))  # 32 faces: well conditioned
    return model


@pytest.fixture(scope="module")
def exported(calibrated, tmp_path_factory):
    """The calibrated model as a SavedModel and all TFLite variants."""
    model = calibrated
    out = tmp_path_factory.mktemp("tflite")
    export.export_saved_model(model, str(out / "saved_model"), img_dim=IMG_DIM)
    # The full-integer variant's activation ranges: faces like the reference's, unseen by both.
    paths = tflite_export.export_tflite(model, str(out / "tflite"), img_dim=IMG_DIM,
                                        calibration_faces=faces(16, seed=4).astype("float32"))
    return str(out / "saved_model"), paths


@pytest.fixture(scope="module")
def reference(exported):
    """The SavedModel's serving_images outputs on 6 faces it has not seen."""
    images = faces(6, seed=2)
    signature = tf.saved_model.load(exported[0]).signatures[signatures.IMAGES_SIGNATURE]
    outputs = signature(images=tf.constant(images))
    # The TFLite models give the numbers; the range's name and the age interval are the
    # SavedModel's alone.
    return images, {name: value.numpy() for name, value in outputs.items()
                    if value.dtype != tf.string and name not in signatures.INTERVAL_OUTPUTS}


@pytest.mark.slow
def test_every_variant_is_written_and_smaller_variants_are_smaller(exported):
    _, paths = exported
    assert sorted(paths) == sorted(tflite_export.VARIANTS)
    sizes = {variant: os.path.getsize(path) for variant, path in paths.items()}
    assert all(os.path.basename(paths[v]) == f"model_{v}.tflite" for v in paths)
    # MobileNetV2 x0.35 with these heads holds ~0.56M weights: ~2.2 MB as float32.
    assert sizes["float32"] > 1.5e6, "weights must be inside the file, not left as variables"
    assert sizes["float16"] < 0.6 * sizes["float32"]
    assert sizes["dynamic_int8"] < 0.4 * sizes["float32"]
    assert not [name for name in os.listdir(os.path.dirname(paths["float32"]))
                if name.startswith(".tmp-")], "no temporary file may be left"


@pytest.mark.slow
def test_float32_matches_the_saved_model(exported, reference):
    images, expected = reference
    got = tflite_export.TFLiteModel(exported[1]["float32"]).predict_resized(images)
    assert set(got) == set(expected) == {"age", "age_histogram", "age_range", "female_probability"}
    assert np.ptp(expected["age"]) > 0.5, "ages must differ between faces to prove anything"
    np.testing.assert_allclose(got["age"], expected["age"], rtol=0, atol=FLOAT32_TOLERANCE_YEARS)
    for name in ("age_histogram", "age_range", "female_probability"):
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-5, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_a_mixed_precision_model_exports_the_float32_arithmetic(calibrated, reference, policy,
                                                                 tmp_path):
    """A GPU (float16) or TPU (bfloat16) run's model converts, and predicts like float32."""
    images, expected = reference
    mixed = build(policy)
    mixed.set_weights(calibrated.get_weights())
    assert mixed.get_layer("pool").compute_dtype != "float32"
    path = tmp_path / "mixed.tflite"
    path.write_bytes(tflite_export.convert(mixed, IMG_DIM, "float32"))
    got = tflite_export.TFLiteModel(str(path)).predict_resized(images)
    np.testing.assert_allclose(got["age"], expected["age"], rtol=0, atol=FLOAT32_TOLERANCE_YEARS)
    assert mixed.get_layer("pool").compute_dtype != "float32", "the trained model is left as it was"


@pytest.mark.parametrize("variant", sorted(SMALL_TOLERANCE_YEARS))
def test_small_variants_stay_within_the_stated_tolerance(exported, reference, variant):
    images, expected = reference
    got = tflite_export.TFLiteModel(exported[1][variant]).predict_resized(images)
    error = np.abs(got["age"] - expected["age"]).max()
    print(f"{variant}: max age difference {error:.4f} years")
    assert error <= SMALL_TOLERANCE_YEARS[variant], f"{variant}: {error:.4f} years"
    assert error > 0, f"{variant} should not be bit-identical to float32: was it quantized?"


def test_inputs_are_uint8_images_at_the_training_size(exported):
    model = tflite_export.TFLiteModel(exported[1]["dynamic_int8"])
    details = model.runner.get_input_details()["images"]
    assert details["dtype"] == np.uint8
    assert list(details["shape"]) == [1, IMG_DIM, IMG_DIM, 3]
    assert model.img_dim == IMG_DIM


@pytest.mark.slow
def test_predict_with_tflite_reads_files_like_the_saved_model(exported, tmp_path):
    """`agetf.predict --tflite` decodes and resizes like serving_default, then rounds to uint8."""
    from PIL import Image

    paths = []
    for i, image in enumerate(faces(3, seed=3)):
        large = Image.fromarray(image).resize((150, 150), Image.BICUBIC)
        paths.append(str(tmp_path / f"{30 + i}_{i % 2}_0_20170101000000000.jpg"))
        large.save(paths[-1], quality=95)
    by_tflite = list(crop_batches.predict_files(
        predictors.load_predictor(exported[1]["float32"]), paths))
    # The same pixels the TFLite model got, through the SavedModel's image signature.
    rounded = np.stack([np.round(image_ops.decode_and_resize(open(p, "rb").read(), IMG_DIM))
                        for p in paths]).astype(np.uint8)
    expected = tf.saved_model.load(exported[0]).signatures[signatures.IMAGES_SIGNATURE](
        images=tf.constant(rounded))
    for index, prediction in enumerate(by_tflite):
        assert prediction.error is None and prediction.true_age == 30 + index
        assert prediction.age == pytest.approx(float(expected["age"][index]),
                                               abs=FLOAT32_TOLERANCE_YEARS)
        assert prediction.age_range == int(np.argmax(expected["age_range"][index]))
        assert prediction.female_probability == pytest.approx(
            float(expected["female_probability"][index]), abs=1e-5)


def test_a_file_that_is_not_a_tflite_model_is_a_one_line_error(tmp_path):
    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"not a flatbuffer")
    with pytest.raises(tflite_export.TFLiteModelError, match="not a TFLite model"):
        tflite_export.TFLiteModel(str(bogus))
    with pytest.raises(tflite_export.TFLiteModelError, match="does not exist"):
        tflite_export.TFLiteModel(str(tmp_path / "missing.tflite"))


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown TFLite variant"):
        tflite_export.convert(None, IMG_DIM, "int4")


def test_models_run_on_litert_without_a_deprecation_warning(exported):
    """ai-edge-litert (the `litert` and `test` extras) runs the models: tf.lite.Interpreter
    warns on every use that it is deprecated and will be deleted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = tflite_export.TFLiteModel(exported[1]["float32"])
    assert type(model.interpreter).__module__.startswith("ai_edge_litert."), (
        "ai-edge-litert is missing: pip install -e '.[test]'")
    assert not [w for w in caught if "deprecated" in str(w.message)]
    assert tflite_export.interpreter_name().startswith("ai_edge_litert ")


def test_without_litert_tensorflows_interpreter_runs_the_models(exported, reference,
                                                                monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    images, expected = reference
    with pytest.warns(UserWarning, match="deprecated"):
        model = tflite_export.TFLiteModel(exported[1]["float32"])
    assert type(model.interpreter) is tf.lite.Interpreter
    assert tflite_export.interpreter_name().startswith("tf.lite ")
    got = model.predict_resized(images)
    np.testing.assert_allclose(got["age"], expected["age"], rtol=0, atol=FLOAT32_TOLERANCE_YEARS)


def test_without_any_interpreter_the_error_is_one_line(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.delattr(tf.lite, "Interpreter")
    with pytest.raises(tflite_export.InterpreterUnavailableError) as error:
        tflite_export.TFLiteModel(exported[1]["float32"])
    assert "\n" not in str(error.value)
    assert "pip install ai-edge-litert" in str(error.value)
    assert isinstance(error.value, RuntimeError)  # agetf.predict prints it as its one error line


def test_conversion_uses_tensorflows_public_api_only():
    """The public converter gives the same model as freezing with TensorFlow's private
    convert_to_constants did (outputs bit-identical, measured on 5 seeds and all variants)."""
    assert "tensorflow.python" not in inspect.getsource(tflite_export)


@pytest.mark.slow
def test_test_time_flip_model_averages_the_image_and_its_mirror(calibrated, exported, reference,
                                                                tmp_path):
    images, plain = reference
    signature = tf.saved_model.load(exported[0]).signatures[signatures.IMAGES_SIGNATURE]
    mirror = signature(images=tf.constant(images[:, :, ::-1]))
    assert np.abs(plain["age"] - mirror["age"].numpy()).max() > 1e-3, "the model is symmetric"
    path = tmp_path / "flip.tflite"
    path.write_bytes(tflite_export.convert(calibrated, IMG_DIM, "float32", flip_average=True))
    got = tflite_export.TFLiteModel(str(path)).predict_resized(images)
    np.testing.assert_allclose(got["age"], (plain["age"] + mirror["age"].numpy()) / 2, rtol=0,
                               atol=FLOAT32_TOLERANCE_YEARS)
