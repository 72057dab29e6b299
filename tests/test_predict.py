"""agetf.predict: finding and reading images, batching, the printed lines, the summary, the CLI."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from agetf import predict


def write_image(path, seed, image_format="JPEG", mode="RGB", size=(48, 40)):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    image.save(path, format=image_format)
    return str(path)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    """Labelled and unlabelled images, a PNG, a greyscale JPEG, broken files, a non-image."""
    folder = tmp_path_factory.mktemp("predict_images")
    write_image(folder / "35_1_0_20170109150557335.jpg.chip.jpg", 1)
    write_image(folder / "7_40_0.jpg", 2)  # the older project's <id>_<age>_<gender>
    write_image(folder / "photo.jpg", 3)
    write_image(folder / "62_0_3_20170109150557335.png", 4, image_format="PNG")
    (folder / "sub").mkdir()
    write_image(folder / "sub" / "20_0_1_20170109150557335.jpg", 5, mode="L")
    (folder / "sub" / "broken.jpg").write_bytes(b"not an image at all")
    good = (folder / "photo.jpg").read_bytes()
    (folder / "sub" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.txt").write_text("not an image")
    return str(folder)


def fake_predictor(images_bytes, fail_on=None):
    """A serving_default stand-in whose outputs depend on each image's bytes only."""
    if fail_on is not None and bool(tf.reduce_any(tf.equal(images_bytes, fail_on))):
        raise tf.errors.InvalidArgumentError(None, None, "Invalid JPEG data\nmore detail")
    length = tf.cast(tf.strings.length(images_bytes), tf.float32)
    return {"age": length % 97.0,
            "age_range": tf.one_hot(tf.cast(length, tf.int32) % 17, 17),
            "female_probability": tf.math.sigmoid(length % 7.0 - 3.0)}


def test_find_images_walks_folders_sorted_and_keeps_named_files(images_dir, tmp_path):
    extra = write_image(tmp_path / "given.webp", 9, image_format="WEBP")
    found = predict.find_images([images_dir, extra])
    relative = [os.path.relpath(p, images_dir) for p in found[:-1]]
    assert relative == ["35_1_0_20170109150557335.jpg.chip.jpg",
                        "62_0_3_20170109150557335.png", "7_40_0.jpg", "photo.jpg",
                        "sub/20_0_1_20170109150557335.jpg", "sub/broken.jpg",
                        "sub/truncated.jpg"]
    assert found[-1] == extra  # named explicitly, so read whatever its extension
    with pytest.raises(ValueError, match="does not exist"):
        predict.find_images([os.path.join(images_dir, "missing.jpg")])


def test_read_jpeg_passes_rgb_jpegs_through_and_reencodes_the_rest(images_dir):
    path = os.path.join(images_dir, "photo.jpg")
    assert predict.read_jpeg(path) == open(path, "rb").read()
    for name in ("62_0_3_20170109150557335.png", "sub/20_0_1_20170109150557335.jpg"):
        data = predict.read_jpeg(os.path.join(images_dir, name))
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (48, 40))
    for name in ("sub/broken.jpg", "sub/truncated.jpg", "notes.txt"):
        with pytest.raises(predict.ImageReadError, match="cannot read"):
            predict.read_jpeg(os.path.join(images_dir, name))


def test_true_labels_come_from_the_file_name():
    assert predict.true_labels("/a_b/35_1_0_20170109150557335.jpg.chip.jpg") == (35, 1)
    assert predict.true_labels("faces/7_40_0.jpg") == (40, 0)
    assert predict.true_labels("photo.jpg") == (None, None)


def test_batches_do_not_change_predictions_and_errors_stay_in_place(images_dir):
    paths = predict.find_images([images_dir])
    one_by_one = list(predict.predict_files(fake_predictor, paths, batch_size=1))
    batched = list(predict.predict_files(fake_predictor, paths, batch_size=3))
    assert [p.path for p in batched] == paths
    assert batched == one_by_one
    errors = {os.path.basename(p.path) for p in batched if p.error}
    assert errors == {"broken.jpg", "truncated.jpg"}
    by_name = {os.path.basename(p.path): p for p in batched}
    assert (by_name["7_40_0.jpg"].true_age, by_name["7_40_0.jpg"].true_gender) == (40, 0)
    assert by_name["photo.jpg"].true_age is None and by_name["photo.jpg"].age is not None


def test_an_image_tensorflow_rejects_is_found_and_the_rest_predicted(images_dir):
    paths = predict.find_images([images_dir])[:4]
    bad = predict.read_jpeg(paths[1])
    rejecting = lambda images_bytes: fake_predictor(images_bytes, fail_on=bad)  # noqa: E731
    results = list(predict.predict_files(rejecting, paths, batch_size=4))
    assert [p.error is not None for p in results] == [False, True, False, False]
    assert results[1].error == f"cannot decode {paths[1]} (Invalid JPEG data)"
    expected = list(predict.predict_files(fake_predictor, paths, batch_size=4))
    assert [p.age for i, p in enumerate(results) if i != 1] == [
        p.age for i, p in enumerate(expected) if i != 1]


def test_format_prediction_uses_the_older_projects_lines():
    full = predict.Prediction(path="a/35_1_0_1.jpg", age=33.26, age_range=6,
                              female_probability=0.871, true_age=35, true_gender=1)
    assert predict.format_prediction(full) == [
        "Predicting for image a/35_1_0_1.jpg",
        "Predicted age: 33.3, true age: 35",
        "Predicted range: 30-35, true range: 35-40",
        "Predicted gender: female (p_female=0.87), true gender: female",
    ]
    bare = predict.Prediction(path="photo.jpg", age=81.0, female_probability=0.2)
    assert predict.format_prediction(bare) == [
        "Predicting for image photo.jpg", "Predicted age: 81.0", "Predicted gender: male (p_female=0.20)"]
    broken = predict.Prediction(path="x.jpg", error="cannot read x.jpg as an image (boom)")
    assert predict.format_prediction(broken) == [
        "Predicting for image x.jpg", "Error: cannot read x.jpg as an image (boom)"]


def test_summary_metrics_over_labelled_images_only():
    P = predict.Prediction
    predictions = [
        P("a", age=30.0, age_range=7, female_probability=0.9, true_age=35, true_gender=1),  # |e|=5
        P("b", age=50.0, age_range=10, female_probability=0.4, true_age=40, true_gender=1),  # 10
        P("c", age=20.0, age_range=4, female_probability=0.1, true_age=21, true_gender=0),  # 1
        P("d", age=60.0, female_probability=0.7),  # unlabelled
        P("e", error="cannot read e", true_age=3, true_gender=0),
    ]
    summary = predict.summarize(predictions)
    assert summary["images"] == 5 and summary["errors"] == 1 and summary["labelled"] == 3
    assert summary["mae"] == pytest.approx(16 / 3)
    assert summary["cs5"] == pytest.approx(2 / 3)  # an error of exactly 5 years counts
    assert summary["range_accuracy"] == pytest.approx(2 / 3)
    assert summary["gender_accuracy"] == pytest.approx(2 / 3)
    lines = predict.format_summary(summary)
    assert lines[1] == "Age MAE: 5.33 years, CS@5: 0.667"
    assert predict.summarize([P("d", age=60.0)]) == {"images": 1, "errors": 0, "labelled": 0}


def test_a_folder_that_is_not_a_saved_model_is_a_one_line_error(tmp_path):
    with pytest.raises(predict.SavedModelError, match="is not a SavedModel") as error:
        predict.load_predictor(str(tmp_path))
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def saved_model(tiny_export):
    return tiny_export.saved_model


def test_run_with_a_real_export_prints_every_image_and_a_summary(saved_model, images_dir):
    out = io.StringIO()
    summary = predict.run(saved_model, [images_dir], batch_size=4, out=out)
    text = out.getvalue()
    assert text.count("Predicting for image") == 7
    assert text.count("Predicted age:") == 5 and text.count("Error: cannot read") == 2
    assert "true age: 40" in text and "Predicted range:" in text and "Predicted gender:" in text
    assert summary["labelled"] == 4 and 0 <= summary["cs5"] <= 1
    assert "Age MAE:" in text and "Gender accuracy:" in text


def test_command_line(saved_model, images_dir, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    image = os.path.join(images_dir, "7_40_0.jpg")
    done = subprocess.run([sys.executable, "-m", "agetf.predict", f"--saved_model={saved_model}",
                           image], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Predicting for image {image}\nPredicted age: ")
    assert ", true age: 40\n" in done.stdout

    failed = subprocess.run([sys.executable, "-m", "agetf.predict",
                             f"--saved_model={tmp_path}", image],
                            capture_output=True, text=True, env=env)
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines()[-1] == (
        f"agetf.predict: error: {tmp_path} is not a SavedModel; pass the saved_model folder "
        "of a training run (model_dir/saved_model)")
