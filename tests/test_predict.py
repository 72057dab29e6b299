"""agetf.predict: finding and reading images, batching, the printed lines, the summary, the CLI."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from agetf import UsageError
from agetf.data import image_files
from agetf.serving import (
    crop_batches,
    photo_pipeline,
    predict_lib,
    prediction_file,
    prediction_lines,
    predictors,
)
from agetf.serving.predict_config import PredictConfig


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
    """A serving_default stand-in that decodes like it (so it rejects what it would reject)
    and whose outputs depend on each image's bytes only."""
    if fail_on is not None and bool(tf.reduce_any(tf.equal(images_bytes, fail_on))):
        raise tf.errors.InvalidArgumentError(None, None, "Invalid JPEG data\nmore detail")
    for jpeg in images_bytes:
        tf.io.decode_jpeg(jpeg, channels=3)
    length = tf.cast(tf.strings.length(images_bytes), tf.float32)
    return {"age": length % 97.0,
            "age_range": tf.one_hot(tf.cast(length, tf.int32) % 17, 17),
            "female_probability": tf.math.sigmoid(length % 7.0 - 3.0)}


def test_find_images_walks_folders_sorted_and_keeps_named_files(images_dir, tmp_path):
    extra = write_image(tmp_path / "given.webp", 9, image_format="WEBP")
    found = predict_lib.find_images([images_dir, extra])
    relative = [os.path.relpath(p, images_dir) for p in found[:-1]]
    assert relative == ["35_1_0_20170109150557335.jpg.chip.jpg",
                        "62_0_3_20170109150557335.png", "7_40_0.jpg", "photo.jpg",
                        "sub/20_0_1_20170109150557335.jpg", "sub/broken.jpg",
                        "sub/truncated.jpg"]
    assert found[-1] == extra  # named explicitly, so read whatever its extension
    with pytest.raises(ValueError, match="does not exist"):
        predict_lib.find_images([os.path.join(images_dir, "missing.jpg")])


def test_read_jpeg_passes_rgb_jpegs_through_and_reencodes_the_rest(images_dir):
    path = os.path.join(images_dir, "photo.jpg")
    assert image_files.read_jpeg(path) == open(path, "rb").read()
    for name in ("62_0_3_20170109150557335.png", "sub/20_0_1_20170109150557335.jpg"):
        data = image_files.read_jpeg(os.path.join(images_dir, name))
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (48, 40))
    for name in ("sub/broken.jpg", "sub/truncated.jpg", "notes.txt"):
        with pytest.raises(image_files.ImageReadError, match="cannot read"):
            image_files.read_jpeg(os.path.join(images_dir, name))
    # Unchecked, an RGB JPEG's bytes come back undecoded (the model's decode checks them);
    # what is not one is still decoded and re-encoded, and what is no image still fails.
    truncated = os.path.join(images_dir, "sub/truncated.jpg")
    assert image_files.read_jpeg(truncated, check=False) == open(truncated, "rb").read()
    png = os.path.join(images_dir, "62_0_3_20170109150557335.png")
    assert image_files.read_jpeg(png, check=False) == image_files.read_jpeg(png)
    with pytest.raises(image_files.ImageReadError, match="not an image format"):
        image_files.read_jpeg(os.path.join(images_dir, "sub/broken.jpg"), check=False)


def test_true_labels_come_from_the_file_name():
    assert crop_batches.true_labels("/a_b/35_1_0_20170109150557335.jpg.chip.jpg") == (35, 1)
    assert crop_batches.true_labels("faces/7_40_0.jpg") == (40, 0)
    assert crop_batches.true_labels("photo.jpg") == (None, None)


def test_batches_do_not_change_predictions_and_errors_stay_in_place(images_dir):
    paths = predict_lib.find_images([images_dir])
    one_by_one = list(crop_batches.predict_files(fake_predictor, paths, batch_size=1))
    batched = list(crop_batches.predict_files(fake_predictor, paths, batch_size=3))
    assert [p.path for p in batched] == paths
    assert batched == one_by_one
    errors = {os.path.basename(p.path) for p in batched if p.error}
    assert errors == {"broken.jpg", "truncated.jpg"}
    by_name = {os.path.basename(p.path): p for p in batched}
    assert (by_name["7_40_0.jpg"].true_age, by_name["7_40_0.jpg"].true_gender) == (40, 0)
    assert by_name["photo.jpg"].true_age is None and by_name["photo.jpg"].age is not None


def test_an_image_tensorflow_rejects_is_found_and_the_rest_predicted(images_dir):
    paths = predict_lib.find_images([images_dir])[:4]
    bad = image_files.read_jpeg(paths[1])
    rejecting = lambda images_bytes: fake_predictor(images_bytes, fail_on=bad)  # noqa: E731
    results = list(crop_batches.predict_files(rejecting, paths, batch_size=4))
    assert [p.error is not None for p in results] == [False, True, False, False]
    assert results[1].error == f"cannot decode {paths[1]} (Invalid JPEG data)"
    expected = list(crop_batches.predict_files(fake_predictor, paths, batch_size=4))
    assert [p.age for i, p in enumerate(results) if i != 1] == [
        p.age for i, p in enumerate(expected) if i != 1]


def test_format_prediction_uses_the_older_projects_lines():
    full = crop_batches.Prediction(path="a/35_1_0_1.jpg", age=33.26, age_range=6,
                              female_probability=0.871, true_age=35, true_gender=1)
    assert prediction_lines.format_prediction(full) == [
        "Predicting for image a/35_1_0_1.jpg",
        "Predicted age: 33.3, true age: 35",
        "Predicted range: 30-35, true range: 35-40",
        "Predicted gender: female (p_female=0.87), true gender: female",
    ]
    bare = crop_batches.Prediction(path="photo.jpg", age=81.0, female_probability=0.2)
    assert prediction_lines.format_prediction(bare) == [
        "Predicting for image photo.jpg", "Predicted age: 81.0",
        "Predicted gender: male (p_female=0.20)"]
    broken = crop_batches.Prediction(path="x.jpg", error="cannot read x.jpg as an image (boom)")
    assert prediction_lines.format_prediction(broken) == [
        "Predicting for image x.jpg", "Error: cannot read x.jpg as an image (boom)"]


def test_summary_metrics_over_labelled_images_only():
    P = crop_batches.Prediction
    predictions = [
        P("a", age=30.0, age_range=7, female_probability=0.9, true_age=35, true_gender=1),  # |e|=5
        P("b", age=50.0, age_range=10, female_probability=0.4, true_age=40, true_gender=1),  # 10
        P("c", age=20.0, age_range=4, female_probability=0.1, true_age=21, true_gender=0),  # 1
        P("d", age=60.0, female_probability=0.7),  # unlabelled
        P("e", error="cannot read e", true_age=3, true_gender=0),
    ]
    summary = prediction_lines.summarize(predictions)
    assert summary["images"] == 5 and summary["errors"] == 1 and summary["labelled"] == 3
    assert summary["mae"] == pytest.approx(16 / 3)
    assert summary["cs5"] == pytest.approx(2 / 3)  # an error of exactly 5 years counts
    assert summary["range_accuracy"] == pytest.approx(2 / 3)
    assert summary["gender_accuracy"] == pytest.approx(2 / 3)
    lines = prediction_lines.format_summary(summary)
    assert lines[1] == "Age MAE: 5.33 years, CS@5: 0.667"
    assert prediction_lines.summarize([P("d", age=60.0)]) == {"images": 1, "errors": 0,
                                                               "labelled": 0}


def test_a_folder_that_is_not_a_saved_model_is_a_one_line_error(tmp_path):
    with pytest.raises(predictors.SavedModelError, match="is not a SavedModel") as error:
        predictors.load_predictor(str(tmp_path))
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def saved_model(tiny_export):
    return tiny_export.saved_model


@pytest.mark.slow
def test_run_with_a_real_export_prints_every_image_and_a_summary(saved_model, images_dir):
    out = io.StringIO()
    summary = predict_lib.run(PredictConfig(saved_model=saved_model, batch_size=4), [images_dir],
                              out=out)
    text = out.getvalue()
    assert text.count("Predicting for image") == 7
    assert text.count("Predicted age:") == 5 and text.count("Error: cannot read") == 2
    assert "true age: 40" in text and "Predicted range:" in text and "Predicted gender:" in text
    assert summary["labelled"] == 4 and 0 <= summary["cs5"] <= 1
    assert "Age MAE:" in text and "Gender accuracy:" in text


def test_a_tf_serving_model_base_predicts_with_its_highest_version(saved_model, images_dir,
                                                                    tmp_path):
    # TF Serving's layout: MODEL/<version>/saved_model.pb; the highest version is served.
    base = tmp_path / "agetf"
    os.makedirs(base / "1")
    shutil.copytree(saved_model, base / "7")
    shutil.copytree(saved_model, base / "10")  # 10 > 7: numbers, not names, are compared
    (base / "10" / "saved_model.pb").write_bytes(b"not a graph")  # damaged: it must be the one
    (base / "notes").mkdir()
    with pytest.raises(predictors.SavedModelError, match=r"agetf/10 cannot be loaded"):
        predict_lib.run(PredictConfig(saved_model=str(base), batch_size=4), [images_dir],
                        out=io.StringIO())
    shutil.rmtree(base / "10")
    out = io.StringIO()
    predict_lib.run(PredictConfig(saved_model=str(base), batch_size=4), [images_dir], out=out)
    reference = io.StringIO()
    predict_lib.run(PredictConfig(saved_model=saved_model, batch_size=4), [images_dir],
                    out=reference)
    assert out.getvalue() == reference.getvalue()


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def faces_with_bad_files(faces_dir, tmp_path_factory):
    """24 synthetic faces, one as a PNG and one greyscale, plus a broken and a truncated JPEG."""
    import shutil

    folder = tmp_path_factory.mktemp("predict_faces")
    names = sorted(os.listdir(faces_dir))[:24]
    for name in names[2:]:
        shutil.copy(os.path.join(faces_dir, name), folder / name)
    Image.open(os.path.join(faces_dir, names[0])).save(folder / (names[0][:-4] + ".png"))
    Image.open(os.path.join(faces_dir, names[1])).convert("L").save(folder / names[1])
    good = (folder / names[5]).read_bytes()
    (folder / "50_0_0_20170109150557335.jpg.chip.jpg").write_bytes(good[: len(good) // 3])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return str(folder)


@pytest.fixture(scope="module")
def faces_with_damaged_files(faces_with_bad_files, tmp_path_factory):
    """The faces above plus 16 damaged copies: cut short at several points, bytes overwritten
    (some of which still decode, to garbage), an empty file."""
    import shutil

    folder = tmp_path_factory.mktemp("predict_damaged")
    shutil.copytree(faces_with_bad_files, folder, dirs_exist_ok=True)
    rng = np.random.default_rng(11)
    sources = sorted(p for p in os.listdir(folder) if p.endswith(".jpg.chip.jpg"))[:8]
    for index, name in enumerate(sources):
        data = (folder / name).read_bytes()
        (folder / f"cut{index}_{name}").write_bytes(data[: len(data) * (index + 2) // 11])
        damaged = bytearray(data)
        for position in rng.integers(300, len(data), 2 + index):
            damaged[position] = int(rng.integers(0, 256))
        (folder / f"hit{index}_{name}").write_bytes(bytes(damaged))
    (folder / "empty.jpg").write_bytes(b"")
    return str(folder)


def checked_first_lines(predictor, paths, batch_size):
    """The lines agetf.predict printed when it decoded every file with Pillow (full size)
    before its batch, and called the model on the files Pillow accepted."""
    predictions = []
    for start in range(0, len(paths), batch_size):
        batch, jpegs = [], []
        for path in paths[start:start + batch_size]:
            true_age, true_gender = crop_batches.true_labels(path)
            prediction = crop_batches.Prediction(path, true_age=true_age, true_gender=true_gender)
            data = open(path, "rb").read()
            verdict = full_decode_verdict(data)
            if verdict is not None:
                prediction.error = f"cannot read {path} as an image ({verdict})"
            else:
                jpegs.append(image_files.rgb_jpeg(path, data)[0])
            batch.append(prediction)
        try:
            outputs = crop_batches._run(predictor, jpegs) if jpegs else None
        except tf.errors.InvalidArgumentError:
            outputs = None  # then each alone: "cannot decode" where TensorFlow rejects it
        for index, prediction in enumerate(p for p in batch if p.error is None):
            crop_batches._fill(prediction, outputs, index, predictor, jpegs[index])
        predictions += batch
    lines = [line for p in predictions for line in prediction_lines.format_prediction(p)]
    return lines + prediction_lines.format_summary(prediction_lines.summarize(predictions))


@pytest.mark.slow
def test_the_lines_are_those_of_decoding_every_file_before_its_batch(
        saved_model, faces_with_damaged_files):
    predictor = predictors.load_predictor(saved_model)
    paths = predict_lib.find_images([faces_with_damaged_files])
    for batch_size in (1, 7):
        expected = checked_first_lines(predictor, paths, batch_size)
        out = io.StringIO()
        predict_lib.predict_and_print(predictor, paths, batch_size, out)
        assert out.getvalue().splitlines() == expected
    errors = [line for line in expected if line.startswith("Error:")]
    assert len(errors) >= 10 and all("cannot read" in line for line in errors)
    assert sum(line.startswith("Predicted age:") for line in expected) >= 26


@pytest.mark.slow
def test_reading_ahead_prints_the_same_lines_in_the_same_order_as_the_plain_path(
        saved_model, faces_with_bad_files):
    predictor = predictors.load_predictor(saved_model)
    paths = predict_lib.find_images([faces_with_bad_files])
    for batch_size in (1, 7, 64):
        plain = list(crop_batches.predict_files(predictor, paths, batch_size, read_threads=0))
        assert [p.path for p in plain] == paths
        assert sum(p.error is not None for p in plain) == 2
        assert all(p.age is not None for p in plain if p.error is None)
        plain_out = io.StringIO()
        plain_summary = predict_lib.predict_and_print(predictor, paths, batch_size, plain_out,
                                                  read_threads=0)
        for read_threads in (1, 2):
            ahead = list(crop_batches.predict_files(predictor, iter(paths), batch_size,
                                                    read_threads))
            assert ahead == plain  # every field: path, labels, outputs, errors
            out = io.StringIO()
            summary = predict_lib.predict_and_print(predictor, paths, batch_size, out, read_threads)
            assert out.getvalue() == plain_out.getvalue() and summary == plain_summary
    errors = [line for line in plain_out.getvalue().splitlines() if line.startswith("Error:")]
    assert len(errors) == 2 and all("cannot read" in line for line in errors)


def test_reading_ahead_keeps_finding_what_tensorflow_rejects(images_dir):
    paths = predict_lib.find_images([images_dir])
    bad = image_files.read_jpeg(paths[3])
    rejecting = lambda images_bytes: fake_predictor(images_bytes, fail_on=bad)  # noqa: E731
    plain = list(crop_batches.predict_files(rejecting, paths, batch_size=2, read_threads=0))
    assert plain[3].error.startswith(f"cannot decode {paths[3]}")
    for read_threads in (1, 2):
        assert list(crop_batches.predict_files(rejecting, paths, 2, read_threads)) == plain


def test_files_are_read_in_the_read_threads_and_the_model_called_in_order(images_dir,
                                                                          monkeypatch):
    import threading

    read_in, called = set(), []
    reading = image_files.read_jpeg

    def recording_read(path, check=True, limits=None):
        read_in.add(threading.current_thread().name.split("_")[0])
        return reading(path, check, limits)

    def recording_predictor(images_bytes):
        called.append(int(images_bytes.shape[0]))
        return fake_predictor(images_bytes)

    monkeypatch.setattr(crop_batches, "read_jpeg", recording_read)
    paths = predict_lib.find_images([images_dir])
    results = list(crop_batches.predict_files(recording_predictor, paths, 3, read_threads=2))
    assert [p.path for p in results] == paths
    assert read_in == {"agetf-read"}
    assert called == [3, 2, 1, 1]  # the last batch, a truncated file, fails, and alone again
    with pytest.raises(ValueError, match="read_threads"):
        list(crop_batches.predict_files(fake_predictor, paths, 3, read_threads=-1))


def full_decode_verdict(data):
    """What read_jpeg said of a file before it decoded RGB JPEGs at 1/8 scale."""
    try:
        Image.open(io.BytesIO(data)).load()
    except Image.UnidentifiedImageError:
        return "not an image format"
    except Exception as error:
        return str(error)
    return None


def test_reduced_scale_check_rejects_what_a_full_decode_rejects_with_the_same_reason(
        faces_dir, tmp_path):
    rng = np.random.default_rng(3)
    names = sorted(os.listdir(faces_dir))[:3]
    cases = []
    for name in names:
        data = open(os.path.join(faces_dir, name), "rb").read()
        cases += [data[:cut] for cut in range(0, len(data), len(data) // 25)]
        for _ in range(15):  # bytes overwritten inside the file
            corrupt = bytearray(data)
            for position in rng.integers(2, len(data), 4):
                corrupt[position] = int(rng.integers(0, 256))
            cases.append(bytes(corrupt))
    rejected = 0
    for index, data in enumerate(cases):
        path = tmp_path / f"case{index}.jpg"
        path.write_bytes(data)
        expected = full_decode_verdict(data)
        try:
            got = image_files.read_jpeg(str(path))
        except image_files.ImageReadError as error:
            rejected += 1
            assert str(error) == f"cannot read {path} as an image ({expected})"
        else:
            assert expected is None and got == data
    assert rejected >= 60  # most cuts and some corruptions are caught


def test_images_over_max_pixels_are_refused_from_the_header_or_decoded_at_reduced_scale(
        tmp_path):
    limits = image_files.ReadLimits(max_pixels=500_000)
    rgb = write_image(tmp_path / "rgb.jpg", 1, size=(1600, 1200))  # 1.9 MP
    grey = write_image(tmp_path / "grey.jpg", 2, mode="L", size=(1600, 1200))
    png = write_image(tmp_path / "big.png", 3, image_format="PNG", size=(1000, 600))
    # An RGB JPEG goes to the model as it is (the model decodes it at a DCT scale), any
    # other JPEG is decoded at the largest scale that fits (1/2: 800x600 is 0.48 MP).
    assert image_files.read_jpeg(rgb, limits=limits) == open(rgb, "rb").read()
    reencoded = Image.open(io.BytesIO(image_files.read_jpeg(grey, limits=limits)))
    assert (reencoded.mode, reencoded.size) == ("RGB", (800, 600))
    with pytest.raises(image_files.ImageReadError) as error:
        image_files.read_jpeg(png, limits=limits)
    assert str(error.value) == (f"{png} has 1000x600 pixels (0.6 MP), more than the 0.5 MP an "
                                "image may have (--max_pixels); only JPEGs are decoded at "
                                "reduced scale")
    with pytest.raises(image_files.ImageReadError, match="even decoded at 1/8 scale"):
        image_files.read_jpeg(rgb, limits=image_files.ReadLimits(max_pixels=20_000))
    photo, scale = image_files.read_photo(grey, limits)
    assert photo.shape == (600, 800, 3) and scale == 2
    photo, scale = image_files.read_photo(rgb, image_files.ReadLimits(max_pixels=150_000))
    assert photo.shape == (300, 400, 3) and scale == 4
    photo, scale = image_files.read_photo(rgb)  # within the default: full size
    assert photo.shape == (1200, 1600, 3) and scale == 1
    with pytest.raises(ValueError, match="--max_pixels and --max_file_mb must be positive"):
        image_files.ReadLimits(max_pixels=0)


def test_a_file_over_max_file_mb_is_not_read_and_only_regular_files_are_opened(tmp_path):
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(3_000_001)  # sparse: nothing written
    limits = image_files.ReadLimits(max_file_mb=3)
    for read in (lambda p: image_files.read_jpeg(p, limits=limits),
                 lambda p: image_files.read_photo(p, limits)):
        with pytest.raises(image_files.ImageReadError) as error:
            read(str(big))
        assert str(error.value) == (f"{big} is 3.0 MB, more than the 3 MB an image file may "
                                    "have (--max_file_mb), not read")
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    assert predict_lib.find_images([str(fifo)]) == [str(fifo)]  # named, so listed, and refused:
    with pytest.raises(image_files.ImageReadError,
                       match=r"not a regular file \(a FIFO\), not read"):
        image_files.read_jpeg(str(fifo))  # without blocking: a FIFO is not opened


# --- the gender rule: one function, over 0.5 is female, in every line ---------------------

def test_a_female_probability_of_exactly_one_half_is_male_in_predicts_lines_and_summary():
    from agetf.serving import face_detection

    P = crop_batches.Prediction
    half = P("a/35_0_0_1.jpg", age=35.0, female_probability=0.5, true_age=35, true_gender=0)
    assert prediction_lines.format_prediction(half)[-1] == (
        "Predicted gender: male (p_female=0.50), true gender: male")
    above = P("b.jpg", female_probability=float(np.nextafter(np.float32(0.5), np.float32(1))))
    assert prediction_lines.format_prediction(above)[-1].startswith("Predicted gender: female")
    assert prediction_lines.summarize([half])["gender_accuracy"] == 1.0
    assert prediction_file.prediction_rows(half)[0]["gender"] == "male"
    face = photo_pipeline.FacePrediction(
        face=face_detection.Face(face_detection.Box(1, 2, 30, 40), 0.99, np.zeros((5, 2))),
        matrix=None, age=35.0, female_probability=0.5)
    photo = photo_pipeline.PhotoPrediction(path="p.jpg", faces=[face])
    assert prediction_lines.format_photo(photo)[1] == (
        "Face 1 at x=1 y=2 w=30 h=40: predicted age 35.0, gender male (p_female=0.50)")
    assert prediction_file.photo_rows(photo)[0]["gender"] == "male"
    assert prediction_lines.face_caption(face) == "35 male"  # drawn by --annotate


def test_a_female_probability_of_exactly_one_half_is_male_in_evaluations_lines_and_metric():
    from agetf.data import labels
    from agetf.evaluation import evaluator

    outputs = {"gender": np.array([0.5, np.nextafter(np.float32(0.5), np.float32(1))],
                                  np.float32)}
    batch_labels = {"age": np.array([30, 31]), "age_range": labels.age_range(np.array([30, 31])),
                    "gender": np.array([0.0, 1.0]), "race": np.array([0, 0]),
                    "filename": np.array([b"30_0_0_a.jpg", b"31_1_0_b.jpg"])}
    assert evaluator.prediction_lines(outputs, batch_labels, 2) == [
        "Predicting for image 30_0_0_a.jpg", "Predicted gender: male, true gender: male",
        "Predicting for image 31_1_0_b.jpg", "Predicted gender: female, true gender: female"]
    report = evaluator.summarize(outputs, batch_labels, np.array([30]), np.array([0]))
    assert report["metrics"]["gender_accuracy"] == 1.0


# --- --output: one row per face, CSV or JSON Lines ---------------------------------------

def read_rows(path):
    """The rows of an --output file as lists of dicts of strings ('' where empty), whichever
    its format, so that a CSV and a JSON Lines file compare."""
    if path.endswith(".csv"):
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    with open(path) as f:
        return [{key: "" if value is None else str(value)
                 for key, value in json.loads(line).items()}
                for line in f]


def printed_blocks(text):
    """{file: the lines printed after its `Predicting for image` line}, summary left out."""
    blocks = {}
    for block in text.split("\nImages: ")[0].split("Predicting for image ")[1:]:
        name, *lines = block.splitlines()
        blocks[name] = lines
    return blocks


@pytest.mark.slow
@pytest.mark.parametrize("extension", ["csv", "jsonl"])
def test_output_has_a_row_per_image_with_the_printed_numbers(saved_model, images_dir, tmp_path,
                                                             extension):
    output = str(tmp_path / f"predictions.{extension}")
    out = io.StringIO()
    predict_lib.run(PredictConfig(saved_model=saved_model, batch_size=4, output=output),
                    [images_dir], out=out)
    rows = read_rows(output)
    blocks = printed_blocks(out.getvalue())
    assert [row["file"] for row in rows] == predict_lib.find_images([images_dir])
    assert list(rows[0]) == list(prediction_file.COLUMNS)
    for row in rows:
        lines = blocks[row["file"]]
        box_and_landmarks = [row[c] for c in prediction_file.COLUMNS[2:17]]
        assert box_and_landmarks == [""] * 15  # crops: no detection
        if row["error"]:
            assert lines == [f"Error: {row['error']}"] and row["face"] == "0"
            assert row["age"] == row["female_probability"] == ""
            continue
        assert row["face"] == "1"
        true_age = f", true age: {row['true_age']}" if row["true_age"] else ""
        assert lines[0] == f"Predicted age: {float(row['age']):.1f}{true_age}"
        assert lines[1].startswith(f"Predicted range: {row['age_range']}")
        gender = (f"Predicted gender: {row['gender']} "
                  f"(p_female={float(row['female_probability']):.2f})")
        true_gender = f", true gender: {row['true_gender']}" if row["true_gender"] else ""
        assert lines[2] == gender + true_gender
    by_name = {os.path.basename(row["file"]): row for row in rows}
    assert (by_name["7_40_0.jpg"]["true_age"], by_name["7_40_0.jpg"]["true_gender"]) == (
        "40", "male")
    assert by_name["broken.jpg"]["error"].startswith("cannot read")
    assert sum(bool(row["error"]) for row in rows) == 2


def test_csv_and_jsonl_hold_the_same_rows(images_dir, tmp_path):
    paths = predict_lib.find_images([images_dir])
    written = {}
    for extension in ("csv", "jsonl"):
        written[extension] = str(tmp_path / f"rows.{extension}")
        predict_lib.predict_and_print(fake_predictor, paths, 3, io.StringIO(),
                                  output=written[extension])
    csv_rows, json_rows = read_rows(written["csv"]), read_rows(written["jsonl"])
    assert len(csv_rows) == len(paths)
    for from_csv, from_json in zip(csv_rows, json_rows):
        assert from_csv.keys() == from_json.keys()
        for key, value in from_csv.items():  # numbers may be written 40 or 40.0
            try:
                assert float(value) == float(from_json[key]), key
            except ValueError:
                assert value == from_json[key], key
    with open(written["jsonl"]) as f:
        first = json.loads(f.readline())
    assert isinstance(first["age"], float) and first["box_left"] is None


def test_a_bad_output_is_refused_in_one_line_before_any_work(images_dir, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded")

    from agetf.serving import face_detection

    monkeypatch.setattr(predictors, "load_predictor", no_work)
    monkeypatch.setattr(predictors, "load_image_predictor", no_work)
    monkeypatch.setattr(face_detection, "load_detector", no_work)
    for run in (predict_lib.run, predict_lib.run_photos):
        with pytest.raises(ValueError) as error:
            run(PredictConfig(saved_model="unused/saved_model", output=str(tmp_path / "rows.txt")),
                [images_dir])
        assert str(error.value) == (f"--output={tmp_path / 'rows.txt'} has neither of the two "
                                    "formats; pass FILE.csv or FILE.jsonl (the extension "
                                    "chooses)")
    # An output that is an input (named, or through a link) would replace it: refused.
    given = tmp_path / "given.csv"
    given.write_bytes(b"an input named explicitly")
    link = tmp_path / "link.jsonl"
    os.symlink(os.path.join(images_dir, "photo.jpg"), link)
    before = open(os.path.join(images_dir, "photo.jpg"), "rb").read()
    for inputs, output in (([images_dir, str(given)], given), ([images_dir], link)):
        for run in (predict_lib.run, predict_lib.run_photos):
            with pytest.raises(ValueError, match=r"is the input .* pass a path that is not an "
                                                 "input") as error:
                run(PredictConfig(saved_model="unused/saved_model", output=str(output)), inputs)
            assert "\n" not in str(error.value)
    assert given.read_bytes() == b"an input named explicitly"
    assert open(os.path.join(images_dir, "photo.jpg"), "rb").read() == before
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        predict_lib.run(PredictConfig(saved_model="unused/saved_model",
                                      output=str(tmp_path / "d.csv")), [images_dir])


def test_a_run_that_stops_leaves_the_old_output_whole(images_dir, tmp_path):
    paths = predict_lib.find_images([images_dir])
    output = tmp_path / "rows.csv"
    output.write_text("the previous run's rows\n")
    calls = []

    def stopped(images_bytes):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill in the middle of the folder
        return fake_predictor(images_bytes)

    with pytest.raises(KeyboardInterrupt):
        predict_lib.predict_and_print(stopped, paths, 2, io.StringIO(), output=str(output))
    assert output.read_text() == "the previous run's rows\n"
    assert os.listdir(tmp_path) == ["rows.csv"]  # and no temporary file beside it
    predict_lib.predict_and_print(fake_predictor, paths, 2, io.StringIO(), output=str(output))
    assert len(read_rows(str(output))) == len(paths)
    assert os.listdir(tmp_path) == ["rows.csv"]


def test_an_output_that_cannot_be_written_is_one_line(images_dir, tmp_path):
    (tmp_path / "a_file").write_text("")
    output = tmp_path / "a_file" / "rows.csv"  # its folder is a file
    paths = predict_lib.find_images([images_dir])[:2]
    with pytest.raises(ValueError) as error:
        predict_lib.predict_and_print(fake_predictor, paths, 2, io.StringIO(), output=str(output))
    assert str(error.value).startswith(f"cannot write --output={output} (")
    assert "\n" not in str(error.value)


# --- the progress bar: on a terminal only ------------------------------------------------

class Terminal(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self):
        return True


def test_a_progress_bar_counts_the_images_on_a_terminal_only(images_dir, monkeypatch):
    paths = predict_lib.find_images([images_dir])
    plain_out, plain_err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain_err)
    plain = predict_lib.predict_and_print(fake_predictor, paths, 3, plain_out)
    assert plain_err.getvalue() == ""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    out = io.StringIO()
    assert predict_lib.predict_and_print(fake_predictor, paths, 3, out) == plain
    drawn = terminal.getvalue()
    assert "predicting" in drawn and f"/{len(paths)} " in drawn and "\r" in drawn
    assert out.getvalue() == plain_out.getvalue()  # the printed lines are unchanged
    # Printed to the same terminal, the lines would land on the bar's line: it is cleared
    # before each image's lines (and when it closes), and only then.
    import re

    assert len(re.findall(r"\r +\r", drawn)) == 1
    shared = Terminal()
    monkeypatch.setattr(sys, "stderr", shared)
    predict_lib.predict_and_print(fake_predictor, paths, 3, shared)
    assert len(re.findall(r"\r +\r", shared.getvalue())) == len(paths) + 1


@pytest.mark.slow
def test_command_line_writes_output_and_no_carriage_return_into_a_log_file(
        saved_model, images_dir, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    output = tmp_path / "rows.jsonl"
    with open(tmp_path / "stderr.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "agetf.predict",
                               f"--saved_model={saved_model}", f"--output={output}", images_dir],
                              stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    errors = (tmp_path / "stderr.log").read_text()
    assert done.returncode == 0, errors
    assert "\r" not in errors
    rows = read_rows(str(output))
    assert len(rows) == done.stdout.count("Predicting for image") == 7

    bad = subprocess.run([sys.executable, "-m", "agetf.predict", "--saved_model=/nonexistent",
                          f"--output={tmp_path / 'rows.xlsx'}", images_dir],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().splitlines()[-1] == (
        f"agetf.predict: error: --output={tmp_path / 'rows.xlsx'} has neither of the two "
        "formats; pass FILE.csv or FILE.jsonl (the extension chooses)")


def test_a_row_without_a_range_head_names_the_range_its_age_falls_in_as_the_export_does():
    ranges = [prediction_file.face_row("f.jpg", 1, age=age)["age_range"]
              for age in (-1.5, 0.0, 4.99, 5.0, 29.7, 79.9, 80.0, 97.0)]
    assert ranges == ["0-5", "0-5", "0-5", "5-10", "25-30", "75-80", "80+", "80+"]
    # A range head's own class wins over the age's range.
    assert prediction_file.face_row("f.jpg", 1, age=29.7, age_range=7)["age_range"] == "35-40"
    assert prediction_file.face_row("f.jpg", 0, error="unreadable")["age_range"] is None


# --- EXIF orientation: a phone's crop is predicted upright, as photos are -----------------

def quadrants_image():
    """64x64 RGB with four flat quadrants, so that any flip or turn changes it."""
    pixels = np.zeros((64, 64, 3), np.uint8)
    pixels[:32, :32], pixels[:32, 32:], pixels[32:, :32] = 250, 150, 100
    return Image.fromarray(pixels)


def orientation_predictor(images_bytes):
    """Outputs that tell how an image is turned: age = top half - bottom half, and the
    female probability from left half - right half (any image format)."""
    ages, sides = [], []
    for encoded in images_bytes:
        image = tf.cast(tf.io.decode_image(encoded, channels=3, expand_animations=False),
                        tf.float32)
        half_h, half_w = image.shape[0] // 2, image.shape[1] // 2
        ages.append(tf.reduce_mean(image[:half_h]) - tf.reduce_mean(image[half_h:]))
        sides.append(tf.reduce_mean(image[:, :half_w]) - tf.reduce_mean(image[:, half_w:]))
    return {"age": tf.stack(ages), "female_probability": (tf.stack(sides) + 255.0) / 510.0}


# What a camera stores for each EXIF orientation: the upright image turned by the inverse
# of the transpose that turns it upright again (ImageOps.exif_transpose).
STORED_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def test_a_crop_with_an_exif_orientation_predicts_like_the_upright_crop(tmp_path):
    upright = quadrants_image()
    upright.save(tmp_path / "upright.jpg", quality=95)
    for orientation, stored in STORED_FOR_ORIENTATION.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        upright.transpose(stored).save(tmp_path / f"tagged{orientation}.jpg", quality=95,
                                       exif=exif)
        upright.transpose(stored).save(tmp_path / f"untagged{orientation}.jpg", quality=95)
    paths = predict_lib.find_images([str(tmp_path)])
    predicted = {os.path.basename(p.path)[:-4]: p for p in
                 crop_batches.predict_files(orientation_predictor, paths, batch_size=4)}
    reference = predicted["upright"]
    assert reference.age > 100 and reference.female_probability > 0.6
    for orientation in STORED_FOR_ORIENTATION:
        tagged, untagged = predicted[f"tagged{orientation}"], predicted[f"untagged{orientation}"]
        assert tagged.error is None and tagged.image_size == (64, 64)
        assert abs(tagged.age - reference.age) < 3, orientation
        assert abs(tagged.female_probability - reference.female_probability) < 0.01, orientation
        # Without the tag the same pixels predict otherwise: the test can see a turn.
        assert (abs(untagged.age - reference.age) > 20
                or abs(untagged.female_probability - reference.female_probability) > 0.05)
        # Photos are turned upright the same way (image_files.read_photo).
        photo, _ = image_files.read_photo(str(tmp_path / f"tagged{orientation}.jpg"))
        assert np.abs(photo.astype(int) - np.asarray(upright, int)).mean() < 3


def test_a_turned_crop_reports_its_upright_size_and_keeps_within_max_pixels(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 80 wide and 40 high, upright 40 x 80
    Image.new("RGB", (80, 40), (9, 9, 9)).save(tmp_path / "turned.jpg", exif=exif)
    (prediction,) = crop_batches.predict_files(orientation_predictor,
                                               [str(tmp_path / "turned.jpg")])
    assert prediction.error is None and prediction.image_size == (40, 80)
    encoded, size = crop_batches.upright(str(tmp_path / "turned.jpg"),
                                         (tmp_path / "turned.jpg").read_bytes(),
                                         image_files.ReadLimits(max_pixels=1000))
    assert size == (40, 80) and Image.open(io.BytesIO(encoded)).size == (20, 40)  # at 1/2


# --- crop mode given a photo: one warning line pointing to --detect_faces -----------------

def test_crop_mode_warns_once_when_an_image_looks_like_a_photo(images_dir, tmp_path):
    normal = predict_lib.find_images([images_dir])
    warnings = io.StringIO()
    predict_lib.predict_and_print(fake_predictor, normal, 3, io.StringIO(), warnings=warnings)
    assert warnings.getvalue() == ""  # 48x40 and 40x48 crops are crops
    wide = write_image(tmp_path / "wide.jpg", 1, size=(400, 300))  # 4:3, like a photo
    large = write_image(tmp_path / "large.jpg", 2, size=(1200, 1200))
    out = io.StringIO()
    predict_lib.predict_and_print(fake_predictor, normal[:2] + [wide, large], 3, out,
                                  warnings=warnings)
    assert warnings.getvalue() == (
        f"agetf.predict: warning: {wide} is 400x300 pixels, far from square; it is predicted "
        "as a face crop: pass --detect_faces to find the faces in photos\n")
    assert out.getvalue().count("Predicted age:") == 4  # predicted all the same
    warnings = io.StringIO()
    predict_lib.predict_and_print(fake_predictor, [large], 3, io.StringIO(), warnings=warnings)
    assert "is 1200x1200 pixels, much larger than a face crop;" in warnings.getvalue()


# --- the config: checked once, before TensorFlow starts ------------------------------------

@pytest.mark.parametrize("settings, message", [
    ({}, "pass exactly one of --saved_model=DIR and --tflite=FILE"),
    ({"saved_model": "m", "tflite": "m.tflite"}, "pass exactly one of"),
    ({"tflite": "model.pb"}, "--tflite=model.pb does not end in .tflite"),
    ({"saved_model": "m", "batch_size": 0}, "--batch_size=0 must be >= 1; the default is 32"),
    ({"saved_model": "m", "output": "rows.xlsx"}, "--output=rows.xlsx has neither"),
    ({"saved_model": "m", "max_pixels": 0}, "--max_pixels and --max_file_mb must be positive"),
])
def test_a_bad_predict_config_is_one_line(settings, message):
    with pytest.raises(ValueError, match=message) as error:
        PredictConfig(**settings)
    assert "\n" not in str(error.value)


def test_every_config_field_is_a_flag_with_the_fields_default_and_errors_come_before_tf():
    code = ("import sys, runpy\n"
            "from absl import flags\n"
            "from agetf import predict\n"
            "from agetf.serving.predict_config import PredictConfig\n"
            "predict.define_flags()\n"
            "flags.FLAGS(['agetf.predict'])\n"
            "assert predict.config_from_flags.__name__\n"
            "for name, field in PredictConfig.__dataclass_fields__.items():\n"
            "    assert flags.FLAGS[name].default == field.default, name\n"
            "try:\n"
            "    predict.main(['agetf.predict', 'face.jpg'])\n"
            "except SystemExit as exit:\n"
            "    print(exit.code)\n"
            "print('tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "agetf.predict: error: pass exactly one of --saved_model=DIR and --tflite=FILE", "False"]


# --- the age interval: printed, and in --output's columns ---------------------------------

@pytest.mark.slow
def test_the_printed_interval_and_the_columns_carry_the_saved_models_interval(saved_model,
                                                                              images_dir,
                                                                              tmp_path):
    widths = {}
    for interval in (0.8, 0.5):
        out, output = io.StringIO(), str(tmp_path / f"rows_{interval}.csv")
        predict_lib.run(PredictConfig(saved_model=saved_model, output=output, interval=interval),
                        [images_dir], out=out)
        blocks = printed_blocks(out.getvalue())
        rows = [row for row in read_rows(output) if not row["error"]]
        assert len(rows) == 5
        for row in rows:
            low, high, std = (float(row[key]) for key in ("age_low", "age_high", "age_std"))
            assert 0 <= low < high <= 100 and std > 0
            assert blocks[row["file"]][-1] == (
                f"Age {interval * 100:g}% interval: {low:.1f}-{high:.1f}, std {std:.1f}")
        widths[interval] = [float(row["age_high"]) - float(row["age_low"]) for row in rows]
    # The same faces' narrower interval, from the SavedModel's quantiles.
    assert all(narrow < wide for narrow, wide in zip(widths[0.5], widths[0.8]))
    signature = predictors.load_predictor(saved_model)
    jpeg = open(os.path.join(images_dir, "photo.jpg"), "rb").read()
    served = signature(images_bytes=tf.constant([jpeg]))
    assert float(served["age_low"][0]) == pytest.approx(
        float(predictors.with_interval(signature, 0.8)(images_bytes=tf.constant([jpeg]))
              ["age_low"][0]), abs=1e-4)


def test_a_model_without_an_interval_leaves_its_columns_and_line_empty():
    prediction = crop_batches.Prediction(path="a.jpg", age=31.0, female_probability=0.2)
    (row,) = prediction_file.prediction_rows(prediction)
    assert row["age"] == 31.0 and row["age_low"] is row["age_high"] is row["age_std"] is None
    assert not any(line.startswith("Age ") for line in
                   prediction_lines.format_prediction(prediction))
    with_interval = crop_batches.Prediction(path="a.jpg", age=31.0, age_low=25.04,
                                            age_high=38.0, age_std=4.66)
    (row,) = prediction_file.prediction_rows(with_interval)
    assert (row["age_low"], row["age_high"], row["age_std"]) == (25.04, 38.0, 4.66)
    assert prediction_lines.format_prediction(with_interval, 0.95)[-1] == (
        "Age 95% interval: 25.0-38.0, std 4.7")


@pytest.mark.parametrize("interval", [0.0, -0.5, 0.995, 1.0])
def test_an_interval_out_of_range_is_refused_in_one_line(interval):
    with pytest.raises(UsageError, match=r"--interval=.* must be above 0 and at most 0.99"):
        PredictConfig(saved_model="m", interval=interval)
