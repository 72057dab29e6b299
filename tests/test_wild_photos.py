"""Photos from the wild: faces found with MTCNN, aligned by their five landmarks into crops
framed like the training crops, predicted one line per face, and drawn with --annotate.
The only real face is scikit-image's astronaut (public domain)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from agetf.serving import (
    face_alignment,
    face_detection,
    photo_pipeline,
    predict_lib,
    predictors,
    tflite_export,
)
from agetf.serving.predict_config import PredictConfig

from conftest import EXPORT_IMG_DIM

# The astronaut's face in scikit-image's 512x512 photo (checked by eye on a drawn box):
# forehead to chin about y 66-160, ear to ear about x 180-270.
ASTRONAUT_FACE_CENTRE = (225, 113)
# A 160 px square around it, pasted into plain scenes as a face whose place is known.
HEAD = (33, 193, 145, 305)  # top, bottom, left, right
PASTE_TOP = 70


@pytest.fixture(scope="module")
def astronaut():
    # Imported, not importorskip: a missing test extra must fail, not silently skip.
    from skimage import data  # scikit-image, the test extra: pip install -e '.[test]'

    return data.astronaut()


@pytest.fixture(scope="session")
def mtcnn():
    """The default detector; every detector shares the process's one MTCNN."""
    return face_detection.load_detector()


def pasted_face_scene(astronaut, lefts=(120,), width=400):
    """The astronaut's head (160 px) pasted at (left, PASTE_TOP) for each left into a plain
    300 px high scene; returns (scene, the pasted box, or a list of them for several)."""
    top, bottom, left, right = HEAD
    head = astronaut[top:bottom, left:right]
    scene = np.empty((300, width, 3), np.uint8)
    scene[:] = (96, 140, 120)
    boxes = []
    for paste_left in lefts:
        scene[PASTE_TOP:PASTE_TOP + head.shape[0], paste_left:paste_left + head.shape[1]] = head
        boxes.append(face_detection.Box(paste_left, PASTE_TOP, head.shape[1], head.shape[0]))
    return scene, boxes[0] if len(boxes) == 1 else boxes


def overlap(a, b):
    """Intersection over union of two boxes."""
    width = max(0, min(a.right, b.right) - max(a.left, b.left))
    height = max(0, min(a.bottom, b.bottom) - max(a.top, b.top))
    intersection = width * height
    return intersection / (a.width * a.height + b.width * b.height - intersection)


def inside(box, outer):
    return (box.left >= outer.left and box.top >= outer.top and box.right <= outer.right
            and box.bottom <= outer.bottom)


def test_one_face_is_found_where_the_astronaut_face_is(astronaut, mtcnn):
    faces = face_detection.detect_faces(astronaut, mtcnn)
    assert len(faces) == 1, faces
    (face,) = faces
    box = face.box
    centre = (box.left + box.width / 2, box.top + box.height / 2)
    assert abs(centre[0] - ASTRONAUT_FACE_CENTRE[0]) < 25, box
    assert abs(centre[1] - ASTRONAUT_FACE_CENTRE[1]) < 25, box
    assert 60 <= box.width <= 130, box
    assert face.confidence >= face_detection.DEFAULT_MIN_CONFIDENCE
    # Five landmarks inside the box: eyes above the nose above the mouth corners.
    assert face.landmarks.shape == (5, 2)
    assert (face.landmarks >= [box.left, box.top]).all()
    assert (face.landmarks <= [box.right, box.bottom]).all()
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_the_astronaut_aligned_crop_has_its_eyes_at_the_template(astronaut, mtcnn):
    """MTCNN run again on the crop the pipeline feeds the model finds the eyes where the
    template puts them (and the first, unrefined alignment already puts the detected eyes
    within 3 px of them)."""
    (face,) = mtcnn(astronaut)
    once, once_matrix = face_alignment.align_face(astronaut, face.landmarks)
    np.testing.assert_allclose(face_alignment.transform_points(once_matrix, face.landmarks[:2]),
                               face_alignment.TEMPLATE[:2], atol=3)
    crops, matrices = photo_pipeline.face_crops(astronaut, [face], mtcnn.for_aligned_crops())
    assert crops.shape == (1, face_alignment.CROP_SIZE, face_alignment.CROP_SIZE, 3)
    # Found again as the template was measured: on the crop as it is, MTCNN's own scale.
    again = face_detection.load_detector(min_face=face_detection.MTCNN_MIN_FACE)(crops[0])
    assert len(again) == 1, again
    eyes, template_eyes = again[0].landmarks[:2], face_alignment.TEMPLATE[:2]
    assert np.abs(eyes - template_eyes).max() <= 3, (eyes, template_eyes)
    # The nose and mouth corners follow the astronaut's own face (a wide smile), near theirs
    # (on the training crops themselves they are 7-9 px from the template, root mean square).
    assert np.hypot(*(again[0].landmarks - face_alignment.TEMPLATE).T).max() <= 15


def test_refining_keeps_the_alignment_where_the_crop_holds_no_face(astronaut):
    """A refiner finding nothing (or another face far from the template) changes nothing."""
    (face,) = face_detection.load_detector()(astronaut)
    once, matrix = face_alignment.align_face(astronaut, face.landmarks)
    far = face_detection.Face(face_detection.Box(0, 0, 50, 50), 0.99,
                              face_alignment.TEMPLATE + [60, 0])
    for found in ([], [far]):
        crop, refined = face_alignment.align_face(astronaut, face.landmarks,
                                                  detector=lambda image, found=found: found)
        np.testing.assert_array_equal(refined, matrix)
        np.testing.assert_array_equal(crop, once)


def test_a_face_pasted_into_a_scene_is_found_and_aligned_where_it_was_pasted(astronaut, mtcnn):
    scene, pasted = pasted_face_scene(astronaut)
    faces = face_detection.detect_faces(scene, mtcnn)
    assert len(faces) == 1, faces
    assert inside(faces[0].box, pasted) and overlap(faces[0].box, pasted) > 0.25, faces[0].box
    # The landmarks are the astronaut's, moved by the paste, so the aligned crops match.
    (original,) = mtcnn(astronaut)
    shift = [pasted.left - HEAD[2], pasted.top - HEAD[0]]
    np.testing.assert_allclose(faces[0].landmarks, original.landmarks + shift, atol=2.5)


def test_two_faces_in_one_photo_give_two_faces_each_where_its_face_is(astronaut, mtcnn):
    scene, pasted = pasted_face_scene(astronaut, lefts=(30, 300), width=500)
    faces = face_detection.detect_faces(scene, mtcnn)
    assert len(faces) == 2, faces
    for face, where in zip(sorted(faces, key=lambda f: f.box.left), pasted):
        assert inside(face.box, where), (face.box, where)


def test_a_scene_without_a_face_gives_no_face(mtcnn):
    scene = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    assert face_detection.detect_faces(scene, mtcnn) == []


@pytest.mark.parametrize("name", ["coins", "chelsea", "coffee"])
def test_coins_with_heads_a_cat_and_a_cup_are_no_faces(name, mtcnn):
    from skimage import data

    photo = getattr(data, name)()
    photo = np.stack([photo] * 3, axis=-1) if photo.ndim == 2 else photo
    assert mtcnn(photo) == []


def test_tiny_and_odd_photos_give_no_face_and_no_error(mtcnn):
    for shape in [(1, 1, 3), (11, 300, 3), (30, 20, 3)]:
        assert mtcnn(np.zeros(shape, np.uint8)) == []


def test_min_face_above_mtcnns_own_setting_still_finds_a_face(astronaut):
    """mtcnn 1.0 alone answers "no face" for any photo at min_face_size=30 (its pyramid
    goes below PNet's window); the detector rescales the photo instead."""
    top, bottom, left, right = HEAD
    head = astronaut[top:bottom, left:right]
    for min_face in (20, 30, 60):
        faces = face_detection.load_detector(min_face=min_face)(head)
        assert len(faces) == 1 and 60 <= faces[0].box.width <= 130, (min_face, faces)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match=r"--min_confidence must be in \[0, 1\]"):
        face_detection.load_detector(min_confidence=1.5)
    with pytest.raises(ValueError, match="--min_face >= 1"):
        face_detection.load_detector(min_face=0)


def test_without_the_mtcnn_package_the_error_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mtcnn", None)  # import mtcnn now raises ImportError
    with pytest.raises(face_detection.DetectorUnavailable, match=r"pip install 'mtcnn>=1.0,<2'"):
        face_detection.shared_mtcnn.__wrapped__()  # the uncached builder


@pytest.fixture(scope="module")
def models(tiny_export, tmp_path_factory):
    """The shared tiny SavedModel and a float32 TFLite file of the same model."""
    tflite = tflite_export.export_tflite(tiny_export.model, str(tmp_path_factory.mktemp("wild")),
                                         img_dim=EXPORT_IMG_DIM, variants=["float32"])["float32"]
    return tiny_export.saved_model, tflite


@pytest.fixture(scope="module")
def photos_dir(astronaut, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(astronaut).save(folder / "astronaut.jpg", quality=92)
    Image.fromarray(pasted_face_scene(astronaut)[0]).save(folder / "pasted.png")
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(folder / "wall.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return str(folder)


@pytest.mark.slow
def test_run_photos_prints_a_line_per_face_and_draws_them(models, photos_dir, tmp_path,
                                                          astronaut, mtcnn):
    out = io.StringIO()
    annotated = tmp_path / "annotated"
    output = tmp_path / "faces.csv"
    counts = predict_lib.run_photos(PredictConfig(saved_model=models[0], annotate=str(annotated),
                                                  output=str(output)), [photos_dir], out=out)
    text = out.getvalue()
    assert {k: counts[k] for k in ("images", "errors", "faces", "without_face")} == {
        "images": 4, "errors": 1, "faces": 2, "without_face": 1}
    blocks = {block.splitlines()[0].rsplit("/", 1)[-1]: block.splitlines()[1:]
              for block in text.split("Predicting for image ")[1:]}
    assert blocks["wall.jpg"][0] == "No face found"
    assert blocks["broken.jpg"][0].startswith("Error: cannot read")
    (line,) = blocks["astronaut.jpg"]
    assert line.startswith("Face 1 at x=") and "predicted age " in line
    assert "range " in line and "p_female=" in line
    assert "Images: 4, unreadable: 1, faces: 2, images without a face: 1" in text
    # The time per readable photo of detection and of alignment.
    assert counts["detection_ms"] > 0 and counts["alignment_ms"] > 0
    assert (f"Time per photo (median of 3): face detection {counts['detection_ms']:.1f} ms, "
            f"alignment {counts['alignment_ms']:.2f} ms") in text

    # --output: a row per face with its box and landmarks and the printed numbers, and a
    # row for the photo without a face and for the unreadable one.
    rows = {os.path.basename(row["file"]): row for row in read_csv(output)}
    assert len(read_csv(output)) == 4
    assert (rows["wall.jpg"]["face"], rows["wall.jpg"]["error"], rows["wall.jpg"]["age"]) == (
        "0", "", "")
    assert rows["broken.jpg"]["face"] == "0"
    assert blocks["broken.jpg"][0] == f"Error: {rows['broken.jpg']['error']}"
    assert_row_is_the_printed_face(rows["astronaut.jpg"], line)

    # Annotated copies of the readable photos: the box in red on the face's edge, and a
    # green dot on each landmark.
    assert sorted(os.listdir(annotated)) == ["astronaut.jpg", "pasted.png", "wall.jpg"]
    drawn = np.asarray(Image.open(annotated / "pasted.png")).astype(int)
    (face,) = mtcnn(pasted_face_scene(astronaut)[0])
    edge = drawn[face.box.top + face.box.height // 2, face.box.left]
    assert edge[0] > 200 and edge[1] < 80, edge
    for x, y in face.landmarks.round().astype(int):
        assert drawn[y, x][1] > 200 and drawn[y, x][0] < 80, (x, y, drawn[y, x])


def read_csv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_row_is_the_printed_face(row, line):
    """An --output row of a detected face holds the numbers of its printed line, a box, a
    confidence, and five landmarks inside the box."""
    box = [int(row[key]) for key in ("box_left", "box_top", "box_width", "box_height")]
    # The age carries its interval where the model gives one (a SavedModel's, not TFLite's).
    interval = (f" (80% interval {float(row['age_low']):.1f}-{float(row['age_high']):.1f})"
                if row["age_low"] else "")
    assert line == (f"Face {row['face']} at x={box[0]} y={box[1]} w={box[2]} h={box[3]}: "
                    f"predicted age {float(row['age']):.1f}{interval}, range {row['age_range']}, "
                    f"gender {row['gender']} (p_female={float(row['female_probability']):.2f})")
    assert float(row["confidence"]) >= face_detection.DEFAULT_MIN_CONFIDENCE
    points = np.array([[float(row[f"{name}_{axis}"]) for axis in "xy"]
                       for name in face_alignment.LANDMARK_NAMES])
    assert (points >= box[:2]).all() and (points <= [box[0] + box[2], box[1] + box[3]]).all()
    left_eye, right_eye = points[:2]
    assert left_eye[0] < right_eye[0]


@pytest.mark.slow
def test_face_crops_are_predicted_like_the_same_aligned_crop_given_directly(models, astronaut,
                                                                           mtcnn):
    """The age printed for a face is the model's age on its aligned, training-style crop."""
    import tensorflow as tf

    scene, _ = pasted_face_scene(astronaut)
    image_predictor = predictors.load_image_predictor(models[0])
    photo = photo_pipeline.predict_photo(image_predictor, "pasted", scene, mtcnn)
    (face,) = photo.faces
    assert photo.detection_seconds > 0 and photo.alignment_seconds > 0
    crop, matrix = face_alignment.align_face(scene, face.face.landmarks,
                                             detector=mtcnn.for_aligned_crops())
    np.testing.assert_allclose(face.matrix, matrix)
    # Refined: not the first alignment, but close to it.
    once = face_alignment.alignment_matrix(face.face.landmarks)
    assert 0 < np.abs(face.matrix - once)[:, :2].max() < 0.1
    direct = image_predictor(images=tf.constant(crop[None]))
    assert face.age == pytest.approx(float(direct["age"][0]), abs=1e-4)


@pytest.mark.slow
def test_command_line_with_tflite_and_annotate(models, photos_dir, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    photo = os.path.join(photos_dir, "astronaut.jpg")
    done = subprocess.run([sys.executable, "-m", "agetf.predict", f"--tflite={models[1]}",
                           f"--annotate={tmp_path / 'out'}", f"--output={tmp_path / 'f.jsonl'}",
                           photo], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"Predicting for image {photo}"
    assert lines[1].startswith("Face 1 at x=") and len(lines) == 4
    assert lines[3].startswith("Time per photo (median of 1): face detection ")
    assert os.path.exists(tmp_path / "out" / "astronaut.jpg")
    with open(tmp_path / "f.jsonl") as f:
        (row,) = [json.loads(text) for text in f]
    assert row["file"] == photo and row["error"] is None
    assert_row_is_the_printed_face({k: "" if v is None else str(v) for k, v in row.items()},
                                   lines[1])

    both = subprocess.run([sys.executable, "-m", "agetf.predict", f"--tflite={models[1]}",
                           f"--saved_model={models[0]}", photo],
                          capture_output=True, text=True, env=env)
    assert both.returncode != 0
    assert both.stderr.strip().splitlines()[-1] == (
        "agetf.predict: error: pass exactly one of --saved_model=DIR and --tflite=FILE")

    bad = subprocess.run([sys.executable, "-m", "agetf.predict", f"--tflite={models[1]}",
                          "--detect_faces", "--min_confidence=2", photo],
                         capture_output=True, text=True, env=env)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith(
        "agetf.predict: error: --min_confidence must be in [0, 1]")


@pytest.mark.slow
def test_command_line_without_mtcnn_is_one_line_naming_the_install(photos_dir):
    """The detector is loaded before the model, so a missing package is the first error."""
    code = ("import runpy, sys; sys.modules['mtcnn'] = None; "
            "sys.argv = ['agetf.predict', '--saved_model=/nonexistent', '--detect_faces', "
            f"{os.path.join(photos_dir, 'wall.jpg')!r}]; "
            "runpy.run_module('agetf.predict', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "agetf.predict: error: face detection needs the mtcnn package; install it with "
        "pip install 'mtcnn>=1.0,<2'")


def photo_bytes(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize("where", ["input folder", "inside it", "link to it",
                                   "folder of a named photo", "link to a named photo"])
def test_annotate_refuses_a_folder_where_it_would_write_over_the_inputs(
        photos_dir, tmp_path, monkeypatch, where):
    """Refused in one line before the detector or the model is loaded; nothing written."""
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(photos_dir, photos)
    before = photo_bytes(photos)
    inputs, annotate = [str(photos)], photos
    if where == "inside it":
        annotate = photos / "annotated"
    elif where == "link to it":
        annotate = tmp_path / "link"
        os.symlink(photos, annotate)
    elif where == "folder of a named photo":
        inputs = [str(photos / "wall.jpg")]
    elif where == "link to a named photo":  # its annotation would be written through the link
        annotate = tmp_path / "out"
        annotate.mkdir()
        os.symlink(photos / "astronaut.jpg", annotate / "astronaut.jpg")
        inputs = [str(photos / "astronaut.jpg")]

    def no_work(*args, **kwargs):
        raise AssertionError("the detector was loaded")

    monkeypatch.setattr(face_detection, "load_detector", no_work)
    with pytest.raises(ValueError, match="--annotate") as error:
        predict_lib.run_photos(PredictConfig(saved_model="unused/saved_model",
                                             annotate=str(annotate)), inputs)
    assert "\n" not in str(error.value) and "over" in str(error.value)
    assert photo_bytes(photos) == before
    assert not (photos / "annotated").exists()


@pytest.mark.slow
def test_annotate_into_the_input_folder_on_the_command_line(models, photos_dir, tmp_path):
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(photos_dir, photos)
    before = photo_bytes(photos)
    done = subprocess.run([sys.executable, "-m", "agetf.predict", f"--tflite={models[1]}",
                           f"--annotate={photos}", str(photos)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert done.returncode == 1 and done.stdout == "", done.stdout
    assert done.stderr.strip().splitlines()[-1] == (
        f"agetf.predict: error: --annotate={photos} is the folder {photos} given as input, so "
        "the annotated photos would be written over the originals; pass a folder outside "
        "the inputs")
    assert photo_bytes(photos) == before


@pytest.mark.slow
def test_a_photo_over_max_pixels_is_decoded_at_reduced_scale_and_boxes_are_in_its_pixels(
        models, astronaut, mtcnn, tmp_path):
    """A JPEG of 2x the pixels allowed decodes at 1/2 scale (DCT scaling): the face is found,
    and its box is printed (and the annotation drawn) in the photo's own pixels."""
    scene, pasted = pasted_face_scene(astronaut)
    big = np.asarray(Image.fromarray(scene).resize((scene.shape[1] * 4, scene.shape[0] * 4),
                                                   Image.BICUBIC))
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=95)
    out = io.StringIO()
    config = PredictConfig(saved_model=models[0], annotate=str(tmp_path / "drawn"),
                           max_pixels=big.shape[0] * big.shape[1] // 3)
    counts = predict_lib.run_photos(config, [str(path)], out=out)
    assert counts["faces"] == 1, out.getvalue()
    line = out.getvalue().splitlines()[1]
    x, y, w, h = (int(part.split("=")[1]) for part in line.split(":")[0].split()[3:])
    found = face_detection.Box(x, y, w, h)
    scaled = face_detection.Box(4 * pasted.left, 4 * pasted.top, 4 * pasted.width,
                                4 * pasted.height)
    assert inside(found, scaled) and overlap(found, scaled) > 0.25, (line, scaled)
    with Image.open(tmp_path / "drawn" / "big.jpg") as drawn:  # drawn on the decoded photo
        assert drawn.size == (big.shape[1] // 2, big.shape[0] // 2)


def test_mtcnn_is_given_at_most_max_pixels():
    """A large photo is scaled down for detection (MTCNN holds ~130 bytes a pixel), and the
    faces come back in the photo's pixels."""
    seen = []

    class RecordingMTCNN:
        def detect_faces(self, image, **kwargs):
            seen.append(image.shape[:2])
            height, width = image.shape[:2]  # one face filling the middle half
            return np.array([[0, width / 4, height / 4, 3 * width / 4, 3 * height / 4, 0.99,
                              *[width / 2] * 5, *[height / 2] * 5]])

    photo = np.zeros((3000, 4000, 3), np.uint8)
    for max_pixels, min_face in [(1_000_000, 30), (face_detection.DEFAULT_MAX_PIXELS, 20)]:
        seen.clear()
        detector = face_detection.MTCNNDetector(min_face=min_face, mtcnn=RecordingMTCNN(),
                                                max_pixels=max_pixels)
        (face,) = detector(photo)
        ((height, width),) = seen
        assert height * width <= max_pixels * 1.01 and abs(width / height - 4 / 3) < 0.01
        assert abs(face.box.left - 1000) <= 4 and abs(face.box.width - 2000) <= 8, face.box
    with pytest.raises(ValueError, match="--max_detection_pixels"):
        face_detection.MTCNNDetector(mtcnn=RecordingMTCNN(), max_pixels=100)


def test_crops_predicted_with_tflite_have_rows_without_a_box(models, photos_dir, tmp_path):
    out, output = io.StringIO(), tmp_path / "crops.csv"
    predict_lib.run(PredictConfig(tflite=models[1], output=str(output)), [photos_dir], out=out)
    rows = read_csv(output)
    assert [os.path.basename(row["file"]) for row in rows] == [
        "astronaut.jpg", "broken.jpg", "pasted.png", "wall.jpg"]
    assert [row["face"] for row in rows] == ["1", "0", "1", "1"]
    assert all(row["box_left"] == row["left_eye_x"] == "" for row in rows)
    assert rows[1]["error"].startswith("cannot read")
    assert f"Predicted age: {float(rows[0]['age']):.1f}\n" in out.getvalue()


def test_a_progress_bar_counts_the_photos_on_a_terminal_only(photos_dir, monkeypatch):
    class NoFaces:
        def __call__(self, image):
            return []

        def for_aligned_crops(self):
            return self

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(face_detection, "load_detector", lambda *args: NoFaces())
    monkeypatch.setattr(predictors, "load_image_predictor", lambda path: None)
    for stream, drawn in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        out = io.StringIO()
        counts = predict_lib.run_photos(PredictConfig(saved_model="unused"), [photos_dir], out=out)
        assert counts["without_face"] == 3 and out.getvalue().count("No face found") == 3
        assert ("predicting" in stream.getvalue() and "/4 " in stream.getvalue()
                and "\r" in stream.getvalue()) == drawn
        assert drawn or stream.getvalue() == ""


# --- scripts/benchmark_wild_photos: crops pasted into photos, or framed by themselves -----

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WILD_BENCHMARK = os.path.join(REPO, "scripts", "benchmark_wild_photos")


@pytest.fixture(scope="module")
def wild_benchmark():
    """The script as a module (it defines its flags only when run as a program)."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("benchmark_wild_photos", WILD_BENCHMARK)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def head_crop(astronaut):
    """The astronaut's head as a 200 px UTKFace-like crop."""
    import cv2

    top, bottom, left, right = HEAD
    return cv2.resize(np.ascontiguousarray(astronaut[top:bottom, left:right]), (200, 200),
                      interpolation=cv2.INTER_CUBIC)


def centred_frame(wild_benchmark, crop, framing, margin_scale):
    """frame_crop's (frame, transform, box) and the frame's side, having checked that the
    200 px crop sits, unscaled, in the middle of a uint8 square of side 200 / margin_scale."""
    frame, to_frame, box = wild_benchmark.frame_crop(crop, framing, margin_scale)
    side = round(200 / margin_scale)
    assert frame.shape == (side, side, 3) and frame.dtype == np.uint8
    offset = (side - 200) // 2
    assert box == (offset, offset, offset + 200, offset + 200)
    return frame, to_frame, box, side


def framed_parts(frame, box):
    """(the frame inside box, a mask of the border 3 px away from the crop and the edges)."""
    left, top, right, bottom = (int(v) for v in box)
    assert (left, top, right, bottom) == box  # whole pixels: the crop is not resampled
    border = np.ones(frame.shape[:2], bool)
    border[top - 3:bottom + 3, left - 3:right + 3] = False
    border[:3], border[-3:], border[:, :3], border[:, -3:] = False, False, False, False
    return frame[top:bottom, left:right], border


@pytest.mark.parametrize("margin_scale", [0.55, 0.3])
def test_reflect_framing_puts_the_crop_at_its_box_in_its_own_mirror_image(
        wild_benchmark, head_crop, margin_scale):
    """At 0.3 the border (233 px) is wider than the crop and mirrors back and forth."""
    frame, to_frame, box, side = centred_frame(wild_benchmark, head_crop, "reflect",
                                               margin_scale)
    left = top = (side - 200) // 2
    inner, _ = framed_parts(frame, box)
    np.testing.assert_array_equal(inner, head_crop)
    # The crop's corners land on the box's corners.
    np.testing.assert_allclose(face_alignment.transform_points(to_frame, [[0, 0], [200, 200]]),
                               [box[:2], box[2:]])
    # numpy's "reflect" mirrors about the edge pixels without repeating them, as
    # cv2.BORDER_REFLECT_101 does.
    mirrored = np.pad(head_crop, ((top, side - 200 - top), (left, side - 200 - left), (0, 0)),
                      mode="reflect")
    np.testing.assert_array_equal(frame, mirrored)


def high_frequency(image):
    """Mean |Laplacian| of the grey image, per pixel."""
    import cv2

    return np.abs(cv2.Laplacian(image.astype(np.float64).mean(-1), cv2.CV_64F))


@pytest.mark.parametrize("margin_scale", [0.55, 0.3])
def test_blur_framing_puts_the_crop_at_its_box_in_a_smooth_border_of_its_colours(
        wild_benchmark, head_crop, margin_scale):
    frame, to_frame, box, side = centred_frame(wild_benchmark, head_crop, "blur", margin_scale)
    inner, border = framed_parts(frame, box)
    np.testing.assert_array_equal(inner, head_crop)
    np.testing.assert_allclose(face_alignment.transform_points(to_frame, [[0, 0]]), [box[:2]])
    # Smooth: under a tenth of the crop's (and the mirrored border's) high frequencies; not a
    # flat fill, and the crop's colours on average.
    crop_energy = high_frequency(head_crop)[3:-3, 3:-3].mean()
    assert high_frequency(frame)[border].mean() < 0.1 * crop_energy
    reflected, _, _ = wild_benchmark.frame_crop(head_crop, "reflect", margin_scale)
    assert high_frequency(reflected)[border].mean() > 0.5 * crop_energy
    assert frame[border].std() > 20
    np.testing.assert_allclose(frame[border].mean(0), head_crop.reshape(-1, 3).mean(0), atol=20)


def test_gender_accuracy_counts_the_found_faces_against_their_crops(wild_benchmark):
    """Scene gender over the found faces, crop gender over the same crops and over all."""
    def record(true_gender, crop_female, scene_female=None):
        detections = [] if scene_female is None else [
            {"confidence": 0.99, "iou": 0.8, "inside_crop": True, "age": 30.0,
             "female_probability": scene_female}]
        return {"detections": detections, "true_gender": true_gender, "true_age": 30,
                "crop_age": 32.0, "crop_female_probability": crop_female}

    records = [record(1, 0.9, 0.8), record(1, 0.9, 0.3), record(0, 0.6, 0.2), record(0, 0.7)]
    result = wild_benchmark.score(records)
    assert result["found"] == 3
    assert result["scene_gender_accuracy"] == pytest.approx(2 / 3)  # the second is wrong
    assert result["crop_gender_accuracy_same_scenes"] == pytest.approx(2 / 3)  # the third
    assert result["crop_gender_accuracy_all_scenes"] == pytest.approx(2 / 4)


def run_wild_benchmark(*args):
    return subprocess.run([sys.executable, WILD_BENCHMARK, *args], capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.parametrize("args, message", [
    (["--margin_scale=0.5"], "--margin_scale frames a crop by itself: pass --framing=reflect"),
    (["--framing=reflect", "--margin_scale=1.5"], "--margin_scale must be in (0, 1]"),
    (["--framing=reflect", "--blur_sigma=0.1"], "--blur_sigma sets --framing=blur's border")])
def test_wild_benchmark_refuses_a_framing_setting_in_one_line(tmp_path, args, message):
    done = run_wild_benchmark(f"--input_dir={tmp_path}", "--saved_model=unused", *args)
    assert done.returncode != 0 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"benchmark_wild_photos: error: {message}"), line


@pytest.mark.slow
def test_wild_benchmark_runs_with_reflect_framing(models, head_crop, tmp_path):
    """End to end on the tiny model: two test-split copies of the astronaut's head, each
    framed by its mirror image, are found where the crop was put."""
    from agetf.data import split_files

    names = [name for name in (f"45_0_0_2017011{i:04d}.jpg" for i in range(200))
             if split_files.assign_split(name) == "test"][:2]
    for name in names:
        Image.fromarray(head_crop).save(tmp_path / name, quality=95)
    done = run_wild_benchmark(f"--input_dir={tmp_path}", f"--saved_model={models[0]}",
                              "--framing=reflect", "--scenes=2", "--seed=0")
    assert done.returncode == 0, done.stderr
    assert "reflect frame, crop 0.55 of its side" in done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["framing"], result["margin_scale"], result["blur_sigma"]) == (
        "reflect", 0.55, None)
    assert (result["scenes"], result["found"], result["found_share"]) == (2, 2, 1.0)
    assert result["scene_megapixels_median"] == pytest.approx(364 * 364 / 1e6)
    # The tiny model's numbers are meaningless, but every measure is there.
    for key in ("median_age_difference_years", "scene_mae", "crop_mae_same_scenes",
                "mae_ratio", "false_faces_on_background", "false_faces_inside_crop"):
        assert result[key] >= 0, key
    for key in ("scene_gender_accuracy", "crop_gender_accuracy_same_scenes",
                "crop_gender_accuracy_all_scenes"):
        assert result[key] in (0.0, 0.5, 1.0), key
