"""Photos from the wild: faces found with OpenCV's bundled Haar cascade, cropped like the
training crops, predicted one line per face, and drawn with --annotate."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from agetf import face_detection
from agetf import predict
from agetf import synthetic
from agetf import tflite_export
from conftest import EXPORT_IMG_DIM
# The astronaut's face in scikit-image's 512x512 photo (checked by eye on a drawn box):
# forehead to chin about y 66-160, ear to ear about x 180-270.
ASTRONAUT_FACE_CENTRE = (225, 113)


@pytest.fixture(scope="module")
def astronaut():
    # Imported, not importorskip: a missing test extra must fail, not silently skip.
    from skimage import data  # scikit-image, the test extra: pip install -e '.[test]'

    return data.astronaut()


def pasted_face_scene(lefts=(150,), width=400):
    """A 120px synthetic face pasted at (left, 90) for each left into a plain scene, 300 px
    high (a seed Haar finds); returns (scene, the pasted box, or a list of them for several)."""
    rng = np.random.default_rng(0)
    age, gender, race = (int(rng.integers(20, 60)), int(rng.integers(0, 2)),
                         int(rng.integers(0, 5)))
    face = synthetic.render_face(age, gender, race, rng, size=120)
    scene = np.empty((300, width, 3), np.uint8)
    scene[:] = rng.integers(60, 200, 3)
    boxes = []
    for left in lefts:
        scene[90:210, left:left + 120] = face
        boxes.append(face_detection.Box(left, 90, 120, 120))
    return scene, boxes[0] if len(boxes) == 1 else boxes


def overlap(a, b):
    """Intersection over union of two boxes."""
    width = max(0, min(a.right, b.right) - max(a.left, b.left))
    height = max(0, min(a.bottom, b.bottom) - max(a.top, b.top))
    intersection = width * height
    return intersection / (a.width * a.height + b.width * b.height - intersection)


@pytest.fixture(scope="module")
def detector():
    return face_detection.load_detector()


def test_one_face_is_found_where_the_astronaut_face_is(astronaut, detector):
    boxes = face_detection.detect_faces(astronaut, detector)
    assert len(boxes) == 1, boxes
    box = boxes[0]
    centre = (box.left + box.width / 2, box.top + box.height / 2)
    assert abs(centre[0] - ASTRONAUT_FACE_CENTRE[0]) < 25, box
    assert abs(centre[1] - ASTRONAUT_FACE_CENTRE[1]) < 25, box
    assert 60 <= box.width <= 130, box


def test_a_synthetic_face_pasted_into_a_scene_is_found_where_it_was_pasted(detector):
    scene, pasted = pasted_face_scene()
    boxes = face_detection.detect_faces(scene, detector)
    assert len(boxes) == 1, boxes
    # Haar boxes cover brows to chin, inside the crop that was pasted ...
    assert overlap(boxes[0], pasted) > 0.5
    # ... and the training-style crop around it recovers the pasted crop's framing.
    square = face_detection.crop_box(boxes[0], *scene.shape[:2])
    assert overlap(square, pasted) > 0.8, square


def test_two_faces_in_one_photo_give_two_boxes_each_where_its_face_is(detector):
    scene, pasted = pasted_face_scene(lefts=(40, 340), width=500)
    boxes = face_detection.detect_faces(scene, detector)
    assert len(boxes) == 2, boxes
    for box, where in zip(sorted(boxes, key=lambda b: b.left), pasted):
        assert overlap(box, where) > 0.5, (box, where)


def test_a_scene_without_a_face_gives_no_box(detector):
    scene = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    assert face_detection.detect_faces(scene, detector) == []


def test_default_margin_is_the_training_crops_framing(detector):
    """Haar misses about half of the cartoon faces; the margin is measured on those it finds."""
    crops = [synthetic.render_face(20 + i, i % 2, i % 5, np.random.default_rng([5, i]), size=160)
             for i in range(24)]
    margin = face_detection.measure_margin(crops, detector)
    assert margin is not None
    assert margin == pytest.approx(face_detection.DEFAULT_MARGIN, abs=0.12)


@pytest.mark.parametrize("box,shape,expected", [
    (face_detection.Box(100, 100, 40, 40), (400, 400), face_detection.Box(90, 90, 60, 60)),
    # Near the top-left corner the square shifts inside the photo rather than shrinking.
    (face_detection.Box(0, 5, 40, 40), (400, 400), face_detection.Box(0, 0, 60, 60)),
    # Near the bottom-right corner likewise.
    (face_detection.Box(370, 370, 30, 30), (400, 400), face_detection.Box(355, 355, 45, 45)),
    # A photo smaller than the square: the side shrinks to the shorter side, still square.
    (face_detection.Box(10, 20, 50, 50), (60, 200), face_detection.Box(5, 0, 60, 60)),
])
def test_crop_box_enlarges_squares_and_stays_inside(box, shape, expected):
    assert face_detection.crop_box(box, *shape, margin=1.5) == expected


def test_a_non_positive_margin_is_refused():
    with pytest.raises(ValueError, match="margin must be > 0"):
        face_detection.crop_box(face_detection.Box(0, 0, 10, 10), 100, 100, margin=0)


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
    Image.fromarray(pasted_face_scene()[0]).save(folder / "pasted.png")
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(folder / "wall.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return str(folder)


def test_run_photos_prints_a_line_per_face_and_draws_them(models, photos_dir, tmp_path):
    out = io.StringIO()
    annotated = tmp_path / "annotated"
    counts = predict.run_photos(models[0], [photos_dir], annotate_dir=str(annotated), out=out)
    text = out.getvalue()
    assert counts == {"images": 4, "errors": 1, "faces": 2, "without_face": 1}
    blocks = {block.splitlines()[0].rsplit("/", 1)[-1]: block.splitlines()[1:]
              for block in text.split("Predicting for image ")[1:]}
    assert blocks["wall.jpg"][0] == "No face found"
    assert blocks["broken.jpg"][0].startswith("Error: cannot read")
    (line,) = blocks["astronaut.jpg"]
    assert line.startswith("Face 1 at x=") and "predicted age " in line
    assert "range " in line and "p_female=" in line
    assert "Images: 4, unreadable: 1, faces: 2, images without a face: 1" in text

    # Annotated copies of the readable photos; the box is drawn in red on the face's edge.
    assert sorted(os.listdir(annotated)) == ["astronaut.jpg", "pasted.png", "wall.jpg"]
    drawn = np.asarray(Image.open(annotated / "pasted.png"))
    face = predict.predict_photo(predict.load_image_predictor(models[0]), "pasted",
                                 pasted_face_scene()[0], face_detection.load_detector(),
                                 face_detection.DEFAULT_MARGIN, 30).faces[0]
    edge = drawn[face.box.top + face.box.height // 2, face.box.left]
    assert edge[0] > 200 and edge[1] < 80, edge


def test_face_crops_are_predicted_like_the_same_crop_given_directly(models):
    """The age printed for a face is the model's age on the training-style square crop."""
    import tensorflow as tf

    scene, _ = pasted_face_scene()
    image_predictor = predict.load_image_predictor(models[0])
    photo = predict.predict_photo(image_predictor, "pasted", scene, face_detection.load_detector(),
                                  face_detection.DEFAULT_MARGIN, 30)
    (face,) = photo.faces
    assert face.crop_box.width == face.crop_box.height
    direct = image_predictor(images=tf.constant(face_detection.crop(scene, face.crop_box)[None]))
    assert face.age == pytest.approx(float(direct["age"][0]), abs=1e-4)


def test_command_line_with_tflite_and_annotate(models, photos_dir, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    photo = os.path.join(photos_dir, "astronaut.jpg")
    done = subprocess.run([sys.executable, "-m", "agetf.predict", f"--tflite={models[1]}",
                           f"--annotate={tmp_path / 'out'}", photo],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"Predicting for image {photo}"
    assert lines[1].startswith("Face 1 at x=") and len(lines) == 3
    assert os.path.exists(tmp_path / "out" / "astronaut.jpg")

    both = subprocess.run([sys.executable, "-m", "agetf.predict", f"--tflite={models[1]}",
                           f"--saved_model={models[0]}", photo],
                          capture_output=True, text=True, env=env)
    assert both.returncode != 0
    assert both.stderr.strip().splitlines()[-1] == (
        "agetf.predict: error: pass exactly one of --saved_model=DIR and --tflite=FILE")
