"""The alignment maths: the least-squares similarity from five landmarks to the template,
and the warp that puts a photo's landmarks on the template's points. No detector, no model."""

import json

import numpy as np
import pytest

from agetf.serving import face_alignment


def similarity(angle_degrees, scale, shift):
    """The 2x3 matrix of a rotation by angle, a uniform scale and a shift."""
    angle = np.deg2rad(angle_degrees)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, np.asarray(shift, np.float64)[:, None]])


def invert(matrix):
    square = np.vstack([matrix, [0, 0, 1]])
    return np.linalg.inv(square)[:2]


def dots_photo(points, shape, radius=3.0):
    """A dark photo with a bright round dot (anti-aliased) at each point."""
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    photo = np.zeros(shape + (3,), np.float64)
    for x, y in points:
        distance = np.hypot(cols - x, rows - y)
        photo[..., :] += np.clip(radius + 0.5 - distance, 0, 1)[..., None] * 255
    return np.clip(photo, 0, 255).astype(np.uint8)


def dot_centres(image, near, window=9):
    """The brightness-weighted centre of the dot near each given point."""
    gray = image[..., 0].astype(np.float64)
    centres = []
    for x, y in near:
        left, top = int(round(x)) - window, int(round(y)) - window
        patch = gray[top:top + 2 * window + 1, left:left + 2 * window + 1]
        rows, cols = np.mgrid[:patch.shape[0], :patch.shape[1]]
        centres.append(((cols * patch).sum() / patch.sum() + left,
                        (rows * patch).sum() / patch.sum() + top))
    return np.array(centres)


def test_the_shipped_template_is_a_face_in_the_crop():
    template, size = face_alignment.TEMPLATE, face_alignment.CROP_SIZE
    left_eye, right_eye, nose, mouth_left, mouth_right = template
    assert size == 200
    assert (template > 0).all() and (template < size).all()
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    # Roughly level and symmetric about the crop's centre line.
    assert abs(left_eye[1] - right_eye[1]) < 5
    assert abs((left_eye[0] + right_eye[0]) / 2 - size / 2) < 10
    # The eyes sit more steadily on the training crops than the nose and mouth corners.
    weights = face_alignment.WEIGHTS
    assert weights.mean() == pytest.approx(1) and min(weights[:2]) > max(weights[2:])


@pytest.mark.parametrize("weights", [None, [2.0, 2.0, 0.7, 0.5, 0.5]])
@pytest.mark.parametrize("angle,scale,shift", [
    (0, 1, (0, 0)), (12, 0.6, (140, 75)), (-35, 2.4, (-60, 300)), (170, 1.3, (500, 400)),
])
def test_a_known_similarity_of_the_template_is_recovered_exactly(angle, scale, shift, weights):
    """Landmarks that are the template moved by a similarity give back its inverse, whatever
    the weights."""
    template = face_alignment.TEMPLATE
    moved = similarity(angle, scale, shift)
    landmarks = face_alignment.transform_points(moved, template)
    matrix = face_alignment.similarity_transform(landmarks, template, weights)
    np.testing.assert_allclose(matrix, invert(moved), atol=1e-9)
    np.testing.assert_allclose(face_alignment.transform_points(matrix, landmarks), template,
                               atol=1e-9)
    assert face_alignment.matrix_scale(matrix) == pytest.approx(1 / scale)


@pytest.mark.parametrize("weights", [None, [3.0, 2.0, 1.0, 0.5, 0.25]])
def test_noisy_landmarks_give_the_least_squares_similarity(weights):
    """The estimate equals the direct (weighted) linear least-squares fit of
    [[a, -b, tx], [b, a, ty]]."""
    rng = np.random.default_rng(3)
    template = face_alignment.TEMPLATE
    landmarks = face_alignment.transform_points(similarity(20, 0.8, (50, 30)), template) \
        + rng.normal(0, 2.5, template.shape)
    root = np.sqrt(np.ones(5) if weights is None else np.asarray(weights))
    rows, values = [], []
    for (x, y), (u, v), w in zip(landmarks, template, root):
        rows += [[w * x, -w * y, w, 0], [w * y, w * x, 0, w]]
        values += [w * u, w * v]
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), np.array(values), rcond=None)
    expected = np.array([[a, -b, tx], [b, a, ty]])
    np.testing.assert_allclose(face_alignment.similarity_transform(landmarks, template, weights),
                               expected, atol=1e-9)


def test_heavier_points_are_fitted_closer():
    """Moving one landmark off: the eyes stay put when they weigh more."""
    template = face_alignment.TEMPLATE
    landmarks = template.copy()
    landmarks[3:] += [0, 8]  # a long face: the mouth 8 px lower
    even = face_alignment.similarity_transform(landmarks, template)
    eyes = face_alignment.similarity_transform(landmarks, template, [4, 4, 1, 1, 1])

    def eye_error(matrix):
        return np.abs(face_alignment.transform_points(matrix, landmarks[:2]) - template[:2]).max()

    assert eye_error(eyes) < 0.8 * eye_error(even)


def test_mirrored_landmarks_give_a_rotation_never_a_reflection():
    template = face_alignment.TEMPLATE
    mirrored = template * [-1, 1] + [300, 0]
    matrix = face_alignment.similarity_transform(mirrored, template)
    assert np.linalg.det(matrix[:, :2]) > 0


@pytest.mark.parametrize("source,target,weights", [
    (np.zeros((5, 2)), np.ones((5, 2)), None),  # all at one point
    (np.zeros((5, 2)), np.zeros((4, 2)), None),  # different counts
    (np.zeros((1, 2)), np.zeros((1, 2)), None),  # one point fixes no rotation
    (np.eye(5, 2), np.eye(5, 2), [1, 1, -1, 1, 1]),  # a negative weight
    (np.eye(5, 2), np.eye(5, 2), [1, 1, 1]),  # too few weights
])
def test_degenerate_landmarks_are_refused(source, target, weights):
    with pytest.raises(ValueError):
        face_alignment.similarity_transform(source, target, weights)


@pytest.mark.parametrize("angle,scale", [(0, 1.0), (11, 0.7), (-12, 1.6), (8, 3.5)])
def test_warping_puts_the_landmarks_on_the_template(angle, scale):
    """Dots drawn at a face's landmarks in a photo land on the template's points in the crop,
    at any roll and size (3.5: a large face, shrunk through the area-averaging path)."""
    template = face_alignment.TEMPLATE
    # Landmarks where a face of this size and roll would have them, around (260, 240).
    moved = similarity(angle, scale, (0, 0))
    landmarks = face_alignment.transform_points(moved, template - 100) + [260, 240]
    photo = dots_photo(landmarks, (560, 600), radius=3.0 * scale)
    crop, matrix = face_alignment.align_face(photo, landmarks)
    assert crop.shape == (200, 200, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(dot_centres(crop, template), template, atol=0.3)


def test_the_crop_is_black_where_the_photo_ends():
    photo = np.full((80, 80, 3), 200, np.uint8)
    # A half-size face: the crop covers photo pixels 0-100, the photo ends at 80.
    landmarks = face_alignment.TEMPLATE * 0.5
    crop, _ = face_alignment.align_face(photo, landmarks)
    assert crop[165:, :].max() == 0 and crop[:, 165:].max() == 0
    assert crop[:155, :155].min() == 200


def test_a_template_file_round_trips_and_a_broken_one_is_one_clear_error(tmp_path):
    path = str(tmp_path / "template.json")
    points = face_alignment.TEMPLATE + 0.25
    face_alignment.write_template(points, 200, {"how": "a test"}, path, weights=[4, 4, 1, 1, 0.5])
    loaded = face_alignment.load_template(path)
    np.testing.assert_allclose(loaded.points, points, atol=0.01)
    np.testing.assert_allclose(loaded.weights, np.array([4, 4, 1, 1, 0.5]) / 2.1)  # mean 1
    assert loaded.crop_size == 200
    assert json.load(open(path))["about"] == {"how": "a test"}

    (tmp_path / "broken.json").write_text('{"crop_size": 200, "points": {"nose": [1, 2]}}')
    with pytest.raises(face_alignment.TemplateError, match="scripts/measure_face_template"):
        face_alignment.load_template(str(tmp_path / "broken.json"))


def test_the_template_is_the_median_of_the_measured_landmarks_weighted_by_their_spread():
    sets = np.stack([face_alignment.TEMPLATE + offset for offset in (-2.0, 0.0, 1.0, 5.0, 9.0)])
    median = face_alignment.median_template(sets)
    np.testing.assert_allclose(median, face_alignment.TEMPLATE + 1.0)
    with pytest.raises(ValueError):
        face_alignment.median_template(np.zeros((0, 5, 2)))
    # A point twice as spread out weighs a quarter as much.
    spread = np.array([1, 1, 2, 2, 2], np.float64)[:, None]
    sets = np.stack([face_alignment.TEMPLATE + sign * spread for sign in (-1, 1)])
    weights = face_alignment.point_weights(sets, face_alignment.TEMPLATE)
    np.testing.assert_allclose(weights / weights[0], [1, 1, 0.25, 0.25, 0.25])
    assert weights.mean() == pytest.approx(1)
