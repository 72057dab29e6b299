"""Serving export: a TensorFlow-only process loads it and predicts what the model predicts;
TensorFlow Serving's REST requests, as docs/deployment.md writes them, run through it."""

import base64
import io
import json
import os
import re
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from agetf.data import image_ops, labels, names
from agetf.data.input_config import InputConfig
from agetf.modeling import age_intervals, heads
from agetf.modeling import model as model_lib
from agetf.serving import export, signatures

from conftest import EXPORT_IMG_DIM
from tiny_runs import calibrate_batchnorm  # pytest puts tests/ on sys.path

IMG_DIM = EXPORT_IMG_DIM
VENV_BIN = os.path.dirname(sys.executable)
DEPLOYMENT_PAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "docs", "deployment.md")
NUMERIC_OUTPUTS = ("age", "age_histogram", "age_range", "female_probability")

# Runs in a fresh interpreter where keras and agetf cannot be imported (a None entry in
# sys.modules makes `import` raise), as on a machine with only TensorFlow installed.
_LOAD_AND_PREDICT = """
import sys
for blocked in ("keras", "tf_keras", "agetf"):
    sys.modules[blocked] = None
import numpy as np
import tensorflow as tf
export_dir, inputs_path, outputs_path = sys.argv[1:]
inputs = np.load(inputs_path, allow_pickle=False)
loaded = tf.saved_model.load(export_dir)
by_bytes = loaded.signatures["serving_default"](images_bytes=tf.constant(list(inputs["jpegs"])))
by_images = loaded.signatures["serving_images"](images=tf.constant(inputs["images"]))
as_numpy = lambda v: v.numpy().astype(bytes) if v.dtype == tf.string else v.numpy()
results = {"bytes_" + k: as_numpy(v) for k, v in by_bytes.items()}
results.update({"images_" + k: as_numpy(v) for k, v in by_images.items()})
# The range names travel as an asset file too: index k of age_range is line k.
with open(loaded.age_range_names.asset_path.numpy().decode()) as f:
    results["asset_age_range_names"] = np.array(f.read().splitlines())
np.savez(outputs_path, **results)
"""


def random_jpegs(count, seed=0):
    """JPEGs of random sizes (some smaller than IMG_DIM, some large enough for DCT scaling)."""
    rng = np.random.default_rng(seed)
    jpegs = []
    for _ in range(count):
        height, width = rng.integers(20, 150, size=2)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        jpegs.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return jpegs


def expected_serving_outputs(model, images, traced=False):
    """What the export should return. `traced` runs the model as a tf.function, as the export
    does: eager Keras differs from graph mode by float32 noise that the histogram expectation
    multiplies into up to ~1e-3 years on these tiny models (graph mode matches exactly)."""
    outputs = (tf.function(lambda x: model(x, training=False))(images) if traced
               else model(images, training=False))
    expected = {"age": heads.predicted_age_years(outputs).numpy()}
    for head, name in [("age_histogram", "age_histogram"), ("age_range", "age_range"),
                       ("gender", "female_probability")]:
        if head in outputs:
            expected[name] = np.asarray(outputs[head])
    return expected


def export_calibrated(model, tmp_path):
    """Calibrates the model's BatchNorm on 8 random images (untrained statistics give ~0
    outputs, which would make comparisons pass trivially) and exports it; returns the folder."""
    calibrate_batchnorm(model, np.random.default_rng(1).uniform(0, 255, (8, IMG_DIM, IMG_DIM, 3))
                        .astype("float32"))
    export_dir = str(tmp_path / "saved_model")
    export.export_saved_model(model, export_dir, img_dim=IMG_DIM)
    return export_dir


@pytest.fixture(scope="module")
def all_heads(tiny_export):
    return tiny_export.model


@pytest.fixture(scope="module")
def exported(tiny_export):
    return tiny_export.saved_model


@pytest.mark.slow
def test_tensorflow_only_process_predicts_what_the_model_predicts(all_heads, exported, tmp_path):
    jpegs = random_jpegs(5)
    images = np.random.default_rng(2).integers(0, 256, (3, 45, 70, 3), dtype=np.uint8)
    np.savez(tmp_path / "inputs.npz", jpegs=np.array(jpegs, dtype=object).astype(bytes),
             images=images)
    subprocess.run([sys.executable, "-c", _LOAD_AND_PREDICT, exported,
                    str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz")],
                   check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    got = dict(np.load(tmp_path / "outputs.npz"))

    decoded = tf.stack([image_ops.decode_and_resize(jpeg, IMG_DIM) for jpeg in jpegs])
    resized = image_ops.resize(images, IMG_DIM)
    assert list(got["asset_age_range_names"]) == list(labels.AGE_RANGE_NAMES)
    for prefix, model_input in [("bytes_", decoded), ("images_", resized)]:
        expected = expected_serving_outputs(all_heads, model_input, traced=True)
        assert sorted(k[len(prefix):] for k in got if k.startswith(prefix)) == sorted(
            [*expected, "age_range_label", *signatures.INTERVAL_OUTPUTS])
        # The name of the most probable range, read with the asset's names: a client needs
        # no copy of agetf.data.labels.
        names = got["asset_age_range_names"]
        assert [label.decode() for label in got[prefix + "age_range_label"]] == list(
            names[np.argmax(got[prefix + "age_range"], axis=-1)])
        for name, value in expected.items():
            # Ages in years, probabilities as they are: both within 1e-4 of the model run in
            # graph mode (as the export runs it).
            np.testing.assert_allclose(got[prefix + name], value, rtol=0, atol=1e-4,
                                       err_msg=prefix + name)
        # Eager Keras (how evaluation predicts) differs from graph mode by float32 noise only:
        # ~1e-5 in a probability, which the 101-bin expectation turns into up to ~1e-3 years.
        eager = expected_serving_outputs(all_heads, model_input)
        for name, value in eager.items():
            np.testing.assert_allclose(got[prefix + name], value, rtol=0,
                                       atol=5e-3 if name == "age" else 1e-4, err_msg=prefix + name)
    assert np.ptp(got["bytes_age"]) > 1e-3, "outputs must differ between images to prove anything"


@pytest.mark.slow
def test_saved_model_cli_lists_both_signatures(exported):
    shown = subprocess.run([os.path.join(VENV_BIN, "saved_model_cli"), "show", "--dir", exported,
                            "--all"], check=True, capture_output=True, text=True).stdout
    assert "signature_def['serving_default']" in shown
    assert "signature_def['serving_images']" in shown
    for name in ("images_bytes", "images", "age", "age_histogram", "age_range",
                 "age_range_label", "female_probability"):
        assert f"['{name}']" in shown, name


@pytest.mark.slow
def test_loaded_signatures_have_the_declared_inputs(exported):
    loaded = tf.saved_model.load(exported)
    bytes_inputs = loaded.signatures["serving_default"].structured_input_signature[1]
    image_inputs = loaded.signatures["serving_images"].structured_input_signature[1]
    assert bytes_inputs["images_bytes"].dtype == tf.string
    assert bytes_inputs["images_bytes"].shape.as_list() == [None]
    assert image_inputs["images"].dtype == tf.uint8
    assert image_inputs["images"].shape.as_list() == [None, None, None, 3]


# --- TensorFlow Serving's REST API, as tensorflow_serving/util/json_tensor.cc maps JSON ----

def _is_b64(value):
    return isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)


def _from_json(value, dtype):
    """A request value as TF Serving reads it: {"b64": ...} is bytes, a string its UTF-8."""
    if isinstance(value, list):
        return [_from_json(item, dtype) for item in value]
    if _is_b64(value):
        assert dtype == tf.string, "TF Serving takes b64 for string tensors only"
        return base64.b64decode(value["b64"], validate=True)
    return value.encode() if dtype == tf.string else value


def _to_json(name, value):
    """An output value as TF Serving writes it: strings named *_bytes as b64, others as text."""
    if isinstance(value, np.ndarray) and value.ndim:
        return [_to_json(name, item) for item in value]
    if isinstance(value, (bytes, np.bytes_)):
        if name.endswith("_bytes"):
            return {"b64": base64.b64encode(value).decode()}
        return value.decode()
    return value.item()


def tf_serving_predict(saved_model_dir, body):
    """The response body of `POST /v1/models/NAME:predict` with `body`: the request's row
    ("instances") or columnar ("inputs") form decoded as TF Serving does, the signature run,
    and the outputs written back in the same form."""
    request = json.loads(body)
    signature = tf.saved_model.load(saved_model_dir).signatures[
        request.get("signature_name", "serving_default")]
    specs = signature.structured_input_signature[1]
    rows = "instances" in request
    given = request["instances" if rows else "inputs"]
    single = not (isinstance(given[0] if rows else given, dict)
                  and not _is_b64(given[0] if rows else given))
    if single:
        (name,) = specs
        inputs = {name: _from_json(given, specs[name].dtype)}
    elif rows:
        assert all(set(row) == set(specs) for row in given)
        inputs = {name: [_from_json(row[name], spec.dtype) for row in given]
                  for name, spec in specs.items()}
    else:
        inputs = {name: _from_json(given[name], spec.dtype) for name, spec in specs.items()}
    outputs = {name: value.numpy() for name, value in signature(
        **{name: tf.constant(value, dtype=specs[name].dtype) for name, value in inputs.items()}
    ).items()}
    if not rows:
        return json.dumps({"outputs": {name: _to_json(name, v) for name, v in outputs.items()}})
    batch = len(next(iter(outputs.values())))
    return json.dumps({"predictions": [{name: _to_json(name, v[i]) for name, v in outputs.items()}
                                       for i in range(batch)]})


def deployment_blocks(language):
    """The fenced code blocks of docs/deployment.md tagged `language`."""
    with open(DEPLOYMENT_PAGE) as f:
        return re.findall(rf"^```{language}\n(.*?)^```", f.read(), flags=re.S | re.M)


@pytest.fixture(scope="module")
def face_jpeg(tmp_path_factory):
    """face.jpg, as the docs' examples name it: 150 x 120, so the export decodes it at 1/4
    scale, the DCT path the trainer evaluates with."""
    folder = tmp_path_factory.mktemp("rest")
    pixels = np.random.default_rng(9).integers(0, 256, (150, 120, 3), dtype=np.uint8)
    (folder / "face.jpg").write_bytes(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return folder / "face.jpg"


def check_prediction(prediction, all_heads, jpeg):
    """`prediction` (one row of a REST response) is what the model predicts for `jpeg`."""
    expected = expected_serving_outputs(
        all_heads, image_ops.decode_and_resize(jpeg, IMG_DIM)[tf.newaxis], traced=True)
    assert sorted(prediction) == sorted([*expected, "age_range_label",
                                         *signatures.INTERVAL_OUTPUTS])
    for name, value in expected.items():
        # rtol: an age near 73 years differed by 1.1e-4 (1.5e-6 relative, float32 rounding
        # of two traced paths) with an untrained model whose init depends on test order.
        np.testing.assert_allclose(prediction[name], value[0], rtol=1e-5, atol=1e-4,
                                   err_msg=name)
    assert prediction["age_range_label"] == labels.AGE_RANGE_NAMES[
        int(np.argmax(expected["age_range"][0]))]


@pytest.mark.slow
def test_the_docs_curl_request_runs_through_serving_default(all_heads, exported, face_jpeg):
    """docs/deployment.md's shell lines build the request body; TF Serving's decoding of it
    runs serving_default, and the response holds what the model predicts."""
    (sh_block,) = [block for block in deployment_blocks("sh") if "curl" in block]
    assert "http://localhost:8501/v1/models/agetf:predict" in sh_block
    body_lines = [line for line in sh_block.splitlines() if line.startswith("printf")]
    subprocess.run(["bash", "-c", "\n".join(body_lines)], cwd=face_jpeg.parent, check=True)
    body = (face_jpeg.parent / "request.json").read_text()
    assert json.loads(body) == {"instances": [
        {"b64": base64.b64encode(face_jpeg.read_bytes()).decode()}]}
    (prediction,) = json.loads(tf_serving_predict(exported, body))["predictions"]
    check_prediction(prediction, all_heads, face_jpeg.read_bytes())


@pytest.mark.slow
def test_the_docs_python_client_gets_the_models_prediction(all_heads, exported, face_jpeg,
                                                           monkeypatch, capsys):
    """docs/deployment.md's Python client, run as written against a stand-in server that
    answers as TF Serving would."""
    (client,) = [block for block in deployment_blocks("python") if "urlopen" in block]
    requests = []

    def serve(request):
        requests.append(request)
        return io.BytesIO(tf_serving_predict(exported, request.data.decode()).encode())

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    monkeypatch.chdir(face_jpeg.parent)
    namespace = {}
    exec(compile(client, DEPLOYMENT_PAGE, "exec"), namespace)  # noqa: S102 (our own docs)
    (request,) = requests
    assert request.full_url == "http://localhost:8501/v1/models/agetf:predict"
    check_prediction(namespace["prediction"], all_heads, face_jpeg.read_bytes())
    assert namespace["prediction"]["age_range_label"] in capsys.readouterr().out


@pytest.mark.slow
def test_named_columnar_and_image_requests_give_the_same_predictions(exported, face_jpeg):
    """The other request forms the docs show: the input named, the columnar form, and
    serving_images with the pixels as nested lists."""
    jpegs = [face_jpeg.read_bytes(), random_jpegs(1, seed=4)[0]]
    b64 = [{"b64": base64.b64encode(jpeg).decode()} for jpeg in jpegs]
    plain = json.loads(tf_serving_predict(exported, json.dumps({"instances": b64})))
    named = json.loads(tf_serving_predict(exported, json.dumps(
        {"instances": [{"images_bytes": value} for value in b64]})))
    columnar = json.loads(tf_serving_predict(exported, json.dumps(
        {"inputs": {"images_bytes": b64}})))["outputs"]
    assert named == plain
    for name in NUMERIC_OUTPUTS + ("age_range_label",):
        assert columnar[name] == [row[name] for row in plain["predictions"]], name
    pixels = tf.io.decode_jpeg(jpegs[0]).numpy()
    by_images = json.loads(tf_serving_predict(exported, json.dumps(
        {"signature_name": "serving_images", "instances": [pixels.tolist()]})))["predictions"][0]
    expected = tf.saved_model.load(exported).signatures["serving_images"](
        images=tf.constant(pixels[np.newaxis]))
    np.testing.assert_allclose(by_images["age"], expected["age"][0], rtol=0, atol=1e-4)


@pytest.mark.slow
def test_png_and_jpeg_of_the_same_pixels_give_the_same_outputs(exported):
    """serving_default takes PNGs (phones' screenshots, RGBA included) with the same decode:
    a JPEG's decoded pixels saved as PNG give exactly its outputs, in one batch with JPEGs."""
    jpegs = random_jpegs(6, seed=7)
    pixels = [image_ops.decode_jpeg_at_least(jpeg, IMG_DIM).numpy() for jpeg in jpegs]
    heights = [int(tf.io.extract_jpeg_shape(jpeg)[0]) for jpeg in jpegs]
    assert any(p.shape[0] < h for p, h in zip(pixels, heights)), "no JPEG decoded at DCT scale"
    pngs = [tf.io.encode_png(p).numpy() for p in pixels]
    rgba = [tf.io.encode_png(np.dstack([p, np.full(p.shape[:2], 200, np.uint8)])).numpy()
            for p in pixels]
    serve = tf.saved_model.load(exported).signatures["serving_default"]
    by_jpeg = serve(images_bytes=tf.constant(jpegs))
    for batch in (pngs, rgba, jpegs[:3] + pngs[3:]):
        got = serve(images_bytes=tf.constant(batch))
        for name in NUMERIC_OUTPUTS:
            np.testing.assert_allclose(got[name], by_jpeg[name], rtol=0, atol=1e-6, err_msg=name)
        assert list(got["age_range_label"].numpy()) == list(by_jpeg["age_range_label"].numpy())
    assert np.ptp(by_jpeg["age"]) > 1e-3, "ages must differ between images to prove anything"


def test_the_saved_model_folder_or_a_tf_serving_model_base_resolves_to_an_export(tmp_path):
    """A run's saved_model/ is one version; a TF Serving model base (MODEL/1, MODEL/2, ...)
    resolves to its highest numbered SavedModel, as TF Serving's default policy serves."""
    base = tmp_path / "agetf"
    for version in ("1", "9", "10", "0011"):
        (base / version).mkdir(parents=True)
        (base / version / "saved_model.pb").write_bytes(b"")
    (base / "12").mkdir()  # being copied: no saved_model.pb yet
    (base / "13.incoming").mkdir()  # not a version number
    (base / "13.incoming" / "saved_model.pb").write_bytes(b"")
    assert export.resolve_saved_model_dir(str(base)) == str(base / "0011")
    assert export.resolve_saved_model_dir(str(base / "9")) == str(base / "9")
    assert export.resolve_saved_model_dir(str(tmp_path)) == str(tmp_path)  # the caller says why


@pytest.mark.parametrize("heads,keys", [
    (["age_histogram"], {"age", "age_histogram", "age_range_label", *signatures.INTERVAL_OUTPUTS}),
    (["age_range"], {"age", "age_range", "age_range_label",
                    *signatures.INTERVAL_OUTPUTS}),
    (["age"], {"age", "age_range_label"}),
    (["age", "gender"], {"age", "age_range_label", "female_probability"}),
    (["gender"], {"female_probability"}),
])
@pytest.mark.slow
def test_output_keys_follow_the_heads(heads, keys):
    model = model_lib.build_model(backbone="MobileNetV2", img_dim=IMG_DIM, heads=heads, alpha=0.35)
    module = export._ServingModule(model, IMG_DIM)
    outputs = module.serve_bytes.get_concrete_function().structured_outputs
    assert set(outputs) == keys
    assert all(spec.dtype == (tf.string if name == "age_range_label" else tf.float32)
               for name, spec in outputs.items())


def test_without_a_range_head_the_label_names_the_range_the_age_falls_in():
    """A histogram or regression model's label is the range of its predicted age, 0-5 below
    zero and 80+ above 80 (an untrained regression head gives ages outside 0..100)."""
    ages = tf.constant([-3.0, 0.0, 4.99, 5.0, 37.5, 79.99, 80.0, 130.0])
    labels_got = export.age_range_labels({"age_histogram": None}, ages).numpy()
    assert [label.decode() for label in labels_got] == [
        "0-5", "0-5", "0-5", "5-10", "35-40", "75-80", "80+", "80+"]
    # With the range head the label is its most probable class, whatever the age says.
    ranges = tf.one_hot([2, 16], labels.NUM_AGE_RANGES)
    assert list(export.age_range_labels({"age_range": ranges}, tf.constant([50.0, 1.0])).numpy()
                ) == [b"10-15", b"80+"]


@pytest.mark.slow
def test_range_and_gender_export_loads_and_gives_years(tmp_path):
    # Saved and loaded, not just traced (an export costs ~5 s, so only this combination: the
    # regression head's x100 is saved and loaded by the mixed-precision test's age+gender).
    model = model_lib.build_model(backbone="MobileNetV2", img_dim=IMG_DIM,
                                  heads=["age_range", "gender"], alpha=0.35)
    export_dir = export_calibrated(model, tmp_path)
    loaded = tf.saved_model.load(export_dir)
    images = np.random.default_rng(5).integers(0, 256, (4, 40, 52, 3), dtype=np.uint8)
    by_images = loaded.signatures["serving_images"](images=tf.constant(images))
    by_bytes = loaded.signatures["serving_default"](
        images_bytes=tf.constant(random_jpegs(4, seed=3)))
    shapes = {"age": (4,), "age_range": (4, labels.NUM_AGE_RANGES), "age_range_label": (4,),
              "female_probability": (4,), "age_low": (4,), "age_high": (4,), "age_std": (4,),
              "age_quantiles": (4, len(age_intervals.QUANTILE_LEVELS))}
    for got in (by_images, by_bytes):
        assert {name: tuple(value.shape) for name, value in got.items()} == shapes
        assert all(value.dtype == (tf.string if name == "age_range_label" else tf.float32)
                   for name, value in got.items())
        assert list(got["age_range_label"].numpy()) == [
            labels.AGE_RANGE_NAMES[k].encode() for k in np.argmax(got["age_range"], axis=-1)]
        # Years: the expectation over range midpoints (2.5 .. 85), not a class index or a share.
        ages = got["age"].numpy()
        np.testing.assert_allclose(
            ages, np.sum(got["age_range"].numpy() * labels.AGE_RANGE_MIDPOINTS, axis=-1),
            rtol=0, atol=1e-4)
        assert np.all((ages >= labels.AGE_RANGE_MIDPOINTS[0])
                      & (ages <= labels.AGE_RANGE_MIDPOINTS[-1]))
    expected = expected_serving_outputs(model, image_ops.resize(images, IMG_DIM), traced=True)
    for name, value in expected.items():
        np.testing.assert_allclose(by_images[name], value, rtol=0, atol=1e-4, err_msg=name)
    assert np.ptp(expected["age"]) > 0.1, "ages must differ between images to prove anything"


@pytest.mark.slow
def test_gender_only_model_exports_and_predicts_gender_alone(tmp_path):
    from agetf.serving import crop_batches, prediction_lines, predictors, tflite_export

    model = model_lib.build_model(backbone="MobileNetV2", img_dim=IMG_DIM, heads=["gender"],
                                  alpha=0.35)
    export_dir = export_calibrated(model, tmp_path)
    images = np.random.default_rng(6).integers(0, 256, (4, 40, 52, 3), dtype=np.uint8)
    got = tf.saved_model.load(export_dir).signatures["serving_images"](images=tf.constant(images))
    assert set(got) == {"female_probability"}
    expected = tf.function(lambda x: model(x, training=False))(image_ops.resize(images, IMG_DIM))
    np.testing.assert_allclose(got["female_probability"], expected["gender"], rtol=0, atol=1e-4)
    assert np.ptp(expected["gender"]) > 1e-3, "probabilities must differ to prove anything"

    # agetf.predict prints and scores gender only; the TFLite model has the same one output.
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{30 + i}_{i % 2}_0_20170101000000000.jpg"))
        tf.io.write_file(paths[-1], tf.io.encode_jpeg(image, quality=95))
    predictions = list(crop_batches.predict_files(predictors.load_predictor(export_dir), paths))
    lines = prediction_lines.format_prediction(predictions[0])
    assert lines[1].startswith("Predicted gender: ") and len(lines) == 2, lines
    summary = prediction_lines.summarize(predictions)
    assert "gender_accuracy" in summary and "mae" not in summary and summary["labelled"] == 4
    tflite = tmp_path / "gender.tflite"
    tflite.write_bytes(tflite_export.convert(model, IMG_DIM, "float32"))
    by_tflite = tflite_export.TFLiteModel(str(tflite)).predict_resized(
        np.round(image_ops.resize(images, IMG_DIM).numpy()).astype(np.uint8))
    assert set(by_tflite) == {"female_probability"}


def test_predict_years_prefers_histogram_then_range_then_regression():
    histogram = tf.constant([labels.age_histogram(40)])
    ranges = tf.one_hot([6], labels.NUM_AGE_RANGES)  # 30-35, midpoint 32.5
    regression = tf.constant([0.2])
    years = lambda **outputs: float(heads.predicted_age_years(outputs)[0])  # noqa: E731
    assert years(age_histogram=histogram, age_range=ranges, age=regression) == pytest.approx(
        40, abs=1e-3)
    assert years(age_range=ranges, age=regression) == pytest.approx(32.5)
    assert years(age=regression) == pytest.approx(20.0)
    # Regression is unbounded: its years are clipped to the ages a face can have.
    assert years(age=tf.constant([-0.031])) == 0.0
    assert years(age=tf.constant([1.5])) == float(names.MAX_AGE)


@pytest.mark.slow
def test_failed_export_keeps_the_previous_one(all_heads, tmp_path, monkeypatch):
    export_dir = tmp_path / "saved_model"
    export_dir.mkdir()
    (export_dir / "saved_model.pb").write_bytes(b"previous export")

    def write_half_then_fail(module, path, signatures):
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.saved_model, "save", write_half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        export.export_saved_model(all_heads, str(export_dir), img_dim=IMG_DIM)
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]
    assert (export_dir / "saved_model.pb").read_bytes() == b"previous export"


@pytest.mark.slow
def test_export_replaces_a_previous_one_when_complete(all_heads, tmp_path, monkeypatch):
    export_dir = tmp_path / "saved_model"
    export_dir.mkdir()
    (export_dir / "stale.txt").write_text("old")

    def write_marker(module, path, signatures):
        assert set(signatures) == {"serving_default", "serving_images"}
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"new")

    monkeypatch.setattr(tf.saved_model, "save", write_marker)
    export.export_saved_model(all_heads, str(export_dir), img_dim=IMG_DIM)
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]
    assert sorted(os.listdir(export_dir)) == ["saved_model.pb"]


@pytest.mark.slow
def test_model_built_under_mirrored_strategy_and_mixed_precision_exports(tmp_path):
    import keras

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        with strategy.scope():
            model = model_lib.build_model(backbone="MobileNetV2", img_dim=IMG_DIM,
                                          heads=["age", "gender"], alpha=0.35)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    export_dir = export_calibrated(model, tmp_path)
    images = np.random.default_rng(4).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    got = tf.saved_model.load(export_dir).signatures["serving_images"](images=tf.constant(images))
    expected = expected_serving_outputs(model, image_ops.resize(images, IMG_DIM))
    assert set(got) == {"age", "age_range_label", "female_probability"}
    for name, value in expected.items():
        assert got[name].dtype == tf.float32
        np.testing.assert_allclose(got[name].numpy(), value, rtol=1e-3, atol=1e-4, err_msg=name)
    assert list(got["age_range_label"].numpy()) == list(export.age_range_labels(
        {"age": None}, got["age"]).numpy())


@pytest.mark.slow
def test_test_time_flip_export_averages_the_image_and_its_mirror(all_heads, tmp_path):
    """--test_time_flip: each exported output is the mean over the image and its mirror image,
    and the age is the mean of the two ages. The tiny model is not mirror-symmetric, so the
    plain and flipped exports must differ (else the test could not tell them apart)."""
    images = np.random.default_rng(3).integers(0, 256, (4, IMG_DIM, IMG_DIM, 3), dtype=np.uint8)
    export_dir = str(tmp_path / "flip_model")
    export.export_saved_model(all_heads, export_dir, img_dim=IMG_DIM, flip_average=True)
    served = tf.saved_model.load(export_dir).signatures["serving_images"](
        images=tf.constant(images))
    plain = expected_serving_outputs(all_heads, tf.constant(images, tf.float32), traced=True)
    mirror = expected_serving_outputs(all_heads, tf.constant(images[:, :, ::-1], tf.float32),
                                      traced=True)
    assert np.abs(plain["age"] - mirror["age"]).max() > 1e-3
    for name in ("age", "age_histogram", "age_range", "female_probability"):
        np.testing.assert_allclose(served[name].numpy(), (plain[name] + mirror[name]) / 2,
                                   atol=1e-4, err_msg=name)
    np.testing.assert_allclose(served["age_histogram"].numpy().sum(-1), 1.0, atol=1e-5)


def test_test_time_flip_evaluation_scores_the_averaged_outputs(all_heads, data_dir):
    """Evaluation with flip_average scores the mean of the two passes, inside tf.data's batches."""
    from agetf.data import input_pipeline
    from agetf.evaluation import evaluator

    config = InputConfig(data_dir=data_dir, img_dim=IMG_DIM)
    plain, batch_labels = evaluator.predict_split(all_heads, config, "test")
    flipped, _ = evaluator.predict_split(all_heads, config, "test", flip_average=True)
    images = np.concatenate([x.numpy() for x, _ in input_pipeline.build_dataset(
        config, "test", 64, training=False)])
    mirror = all_heads(images[:, :, ::-1], training=False)
    for name in ("age_histogram", "gender"):
        np.testing.assert_allclose(flipped[name], (plain[name] + np.asarray(mirror[name])) / 2,
                                   atol=1e-5, err_msg=name)
    report, _ = evaluator.evaluate(all_heads, config, "test", flip_average=True)
    assert report["test_time_flip"] is True
    ages = evaluator.predicted_ages(flipped)
    assert report["metrics"]["mae"] == pytest.approx(
        np.abs(ages - batch_labels["age"]).mean(), abs=1e-6)


@pytest.mark.slow
def test_interval_outputs_are_the_models_distribution_after_the_temperature(all_heads, exported,
                                                                          tmp_path):
    """The SavedModel's age_low, age_high, age_std and age_quantiles are those of the Keras
    model's histogram after the export's temperatures; the age and the histogram stay raw."""
    images = np.random.default_rng(6).integers(0, 256, (4, IMG_DIM, IMG_DIM, 3), dtype=np.uint8)
    export_dir = str(tmp_path / "calibrated")
    knots = ((20.0, 0.3), (60.0, 0.5))  # every temperature below 1: narrower
    export.export_saved_model(all_heads, export_dir, img_dim=IMG_DIM, interval_knots=knots,
                              interval=0.9)
    served = tf.saved_model.load(export_dir).signatures["serving_images"](
        images=tf.constant(images))
    plain = tf.saved_model.load(exported).signatures["serving_images"](images=tf.constant(images))
    outputs = tf.function(lambda x: all_heads(x, training=False))(tf.constant(images, tf.float32))
    expected = age_intervals.interval_outputs(outputs["age_histogram"], knots, 0.9)
    for name in signatures.INTERVAL_OUTPUTS:
        np.testing.assert_allclose(served[name].numpy(), expected[name].numpy(), atol=1e-2,
                                   err_msg=name)
    low, high = served["age_low"].numpy(), served["age_high"].numpy()
    assert (low < high).all() and (served["age_quantiles"].numpy()[:, 0] <= low).all()
    # Temperatures below 1 narrow; the temperature-1 export's 80% interval is its own.
    assert (served["age_std"].numpy() < plain["age_std"].numpy()).all()
    default = age_intervals.interval_outputs(outputs["age_histogram"])
    np.testing.assert_allclose(plain["age_low"].numpy(), default["age_low"].numpy(), atol=1e-2)
    for name in ("age", "age_histogram"):
        np.testing.assert_allclose(served[name].numpy(), plain[name].numpy(), atol=1e-5)
