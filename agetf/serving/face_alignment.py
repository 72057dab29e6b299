"""Aligning a detected face to the training crops' geometry.

A face's five landmarks (eyes, nose tip, mouth corners; see LANDMARK_NAMES) are mapped onto
TEMPLATE, the place where the detector puts them on the training crops themselves, by the
weighted least-squares similarity transform (rotation, uniform scale and translation:
Umeyama 1991), and the photo is warped with that transform into a CROP_SIZE x CROP_SIZE
crop, framed like a training crop: the same eye line, eye distance and mouth height.

TEMPLATE lives in face_template.json beside this module, with how and when it was measured:
the per-coordinate median of the MTCNN landmarks over a sample of the training crops. Each
point's weight (WEIGHTS) is the inverse of its mean squared distance from the template over
those crops: the eyes sit about twice as steadily as the nose and mouth corners (a face's
length varies more than its eye line), so they count more. On 584 other training crops,
whose own framing is the one to reproduce (their aligned crop should be the crop itself),
this moves the crop's corners less than equal weights do (median 4.8 against 5.1 px,
90th percentile 10.3 against 11.9 px) and puts the eyes closer to the template (median
largest eye error 1.8 against 3.0 px).
`scripts/measure_face_template --input_dir DIR --write` measures both again and rewrites
that file.
"""

import dataclasses
import functools
import json
import os
import re

import numpy as np

from agetf import UsageError
from agetf.common import files

TEMPLATE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "face_template.json")
# The order of the five points everywhere: "left" is the one on the image's left.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
# Where the photo ends, the crop is black, as in the UTKFace crops (about 15% of them
# have black corners where their source photo ended).
BORDER_VALUE = (0, 0, 0)


class TemplateError(UsageError):
    """A template file that cannot be read or does not hold five points."""


@dataclasses.dataclass(frozen=True, eq=False)
class Template:
    """Five (x, y) points in a crop_size x crop_size crop, and each point's fit weight."""

    points: np.ndarray  # [5, 2] float64, LANDMARK_NAMES order
    crop_size: int
    weights: np.ndarray  # [5] float64, mean 1


def load_template(path: str = TEMPLATE_FILE) -> Template:
    """The Template in a JSON file (weights default to equal ones)."""
    try:
        with open(path) as f:
            content = json.load(f)
        points = np.asarray([content["points"][name] for name in LANDMARK_NAMES], np.float64)
        weights = np.asarray([content.get("weights", {}).get(name, 1.0)
                              for name in LANDMARK_NAMES], np.float64)
        size = int(content["crop_size"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise TemplateError(f"cannot read the face template {path} ({error}); measure it with "
                            "scripts/measure_face_template --input_dir DIR --write") from None
    if points.shape != (5, 2) or size < 1 or not (weights > 0).all():
        raise TemplateError(f"{path} must hold five (x, y) points, positive weights and a "
                            "positive crop_size")
    return Template(points, size, weights / weights.mean())


def point_weights(landmark_sets, points) -> np.ndarray:
    """Each point's weight: the inverse of its mean squared distance from the template point
    over the measured faces ([n, 5, 2]), scaled to mean 1."""
    residual = np.asarray(landmark_sets, np.float64) - np.asarray(points, np.float64)
    weights = 1.0 / np.maximum((residual ** 2).sum(axis=2).mean(axis=0), 1e-6)
    return weights / weights.mean()


def write_template(points, crop_size: int, about: dict, path: str = TEMPLATE_FILE,
                   weights=None) -> None:
    """Writes points (five (x, y), LANDMARK_NAMES order), their weights (default equal) and
    crop_size, with `about` (how it was measured), as the JSON load_template reads."""
    points = np.asarray(points, np.float64)
    weights = np.ones(5) if weights is None else np.asarray(weights, np.float64)
    content = {"crop_size": int(crop_size),
               "points": {name: [round(float(x), 2), round(float(y), 2)]
                          for name, (x, y) in zip(LANDMARK_NAMES, points)},
               "weights": {name: round(float(w), 3) for name, w in zip(LANDMARK_NAMES, weights)},
               "about": about}
    text = json.dumps(content, indent=2)
    # One line per (x, y) pair, not three.
    text = re.sub(r"\[\s+(-?[\d.]+),\s+(-?[\d.]+)\s+\]", r"[\1, \2]", text)
    files.write_text(path, text + "\n")  # whole or not at all: agetf reads it at every start


@functools.lru_cache(maxsize=1)
def default_template() -> Template:
    """The template agetf aligns to (TEMPLATE_FILE), read once."""
    return load_template()


def __getattr__(name):
    """TEMPLATE, WEIGHTS and CROP_SIZE of TEMPLATE_FILE, read when first used (so that a
    broken file stops only what needs it, and scripts/measure_face_template still runs)."""
    if name == "TEMPLATE":
        return default_template().points.copy()
    if name == "WEIGHTS":
        return default_template().weights.copy()
    if name == "CROP_SIZE":
        return default_template().crop_size
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def similarity_transform(source, target, weights=None) -> np.ndarray:
    """The 2x3 matrix of the rotation + uniform scale + translation taking source points
    closest to target points in (weighted) least squares: the sum over points of weight
    times squared distance is smallest (Umeyama 1991, weighted; never a reflection)."""
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 \
            or len(source) < 2:
        raise UsageError(f"need two matching lists of >= 2 (x, y) points, got shapes "
                         f"{source.shape} and {target.shape}")
    weights = np.ones(len(source)) if weights is None else np.asarray(weights, np.float64)
    if weights.shape != (len(source),) or (weights < 0).any() or weights.sum() <= 0:
        raise UsageError(f"need one non-negative weight per point, got {weights}")
    weights = weights / weights.sum()
    source_mean, target_mean = weights @ source, weights @ target
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = weights @ (source_centred ** 2).sum(axis=1)
    if source_variance <= 1e-12:
        raise UsageError("the source points all coincide; no transform maps them")
    covariance = (target_centred * weights[:, None]).T @ source_centred
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / source_variance
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - scale * rotation @ source_mean
    return matrix


def transform_points(matrix, points) -> np.ndarray:
    """Points [n, 2] mapped by a 2x3 affine matrix."""
    points = np.asarray(points, np.float64)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def matrix_scale(matrix) -> float:
    """The uniform scale of a similarity matrix (crop pixels per photo pixel)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))


def warp(image, matrix, size: int = None) -> np.ndarray:
    """The size x size crop that matrix (photo -> crop pixels) cuts from a uint8 RGB photo.

    Bilinear; where the crop shrinks the photo by more than 1.5x, the part of the photo the
    crop covers is first shrunk with area averaging, so a large face is not aliased.
    """
    import cv2  # OpenCV only for warping: the template's geometry needs none

    size = default_template().crop_size if size is None else size
    image = np.ascontiguousarray(image, dtype=np.uint8)
    matrix = np.asarray(matrix, np.float64)
    scale = matrix_scale(matrix)
    if scale < 1 / 1.5:
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
        inverse = cv2.invertAffineTransform(matrix)
        covered = transform_points(inverse, corners)
        height, width = image.shape[:2]
        left, top = np.clip(np.floor(covered.min(axis=0)).astype(int) - 2, 0, [width, height])
        right, bottom = np.clip(np.ceil(covered.max(axis=0)).astype(int) + 2, 0, [width, height])
        if right > left and bottom > top:
            part = image[top:bottom, left:right]
            new_width = max(1, int(round(part.shape[1] * scale)))
            new_height = max(1, int(round(part.shape[0] * scale)))
            shrunk = cv2.resize(part, (new_width, new_height), interpolation=cv2.INTER_AREA)
            # shrunk pixel (u, v) is part pixel ((u + 0.5) * sx - 0.5, ...), part = photo - offset.
            sx, sy = part.shape[1] / new_width, part.shape[0] / new_height
            to_photo = np.array([[sx, 0, left + 0.5 * sx - 0.5], [0, sy, top + 0.5 * sy - 0.5],
                                 [0, 0, 1]])
            image, matrix = shrunk, matrix @ to_photo
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_VALUE)


def alignment_matrix(landmarks, template: Template = None) -> np.ndarray:
    """The 2x3 matrix (photo -> crop pixels) putting five landmarks ([5, 2], LANDMARK_NAMES
    order) onto the template's points, weighted by its point weights."""
    template = default_template() if template is None else template
    return similarity_transform(landmarks, template.points, template.weights)


def compose(outer, inner) -> np.ndarray:
    """The 2x3 matrix applying inner, then outer."""
    outer, inner = np.asarray(outer, np.float64), np.asarray(inner, np.float64)
    return outer[:, :2] @ inner + np.hstack([np.zeros((2, 2)), outer[:, 2:]])


def align_face(image, landmarks, template: Template = None, detector=None):
    """(crop [size, size, 3] uint8, matrix): the photo warped so that the five landmarks
    ([5, 2], LANDMARK_NAMES order, photo pixels) land on the template's points.

    With a detector (face_detection.MTCNNDetector.for_aligned_crops()), the alignment is
    refined once: see refine.
    """
    template = default_template() if template is None else template
    matrix = alignment_matrix(landmarks, template)
    crop = warp(image, matrix, template.crop_size)
    if detector is not None:
        crop, matrix = refine(image, crop, matrix, detector, template)
    return crop, matrix


# A face found again in an aligned crop with landmarks this far (mean, crop pixels) from
# the template is taken for another face, and the first alignment is kept.
REFINE_TOLERANCE = 20.0


def refine(image, crop, matrix, detector, template: Template = None):
    """(crop, matrix) corrected by the landmarks the detector finds on the aligned crop.

    The template is where MTCNN puts the landmarks on the training crops, so landmarks
    found on a crop of that size and framing are the ones that compare with it; a face
    small in its photo (its landmarks found a few pixels wide) gains most. Measured with
    scripts/benchmark_wild_photos --diagnose: on two seeds' 300 scenes the median age
    difference from the original crops fell from 0.88 to 0.81 and 0.77 years, the scene
    MAE over the crops' from 1.022 and 1.046 to 1.005 and 1.009 times, for about 60 ms
    more per face on 2 CPU cores.
    """
    template = default_template() if template is None else template
    faces = [face for face in detector(crop)
             if np.hypot(*(face.landmarks - template.points).T).mean() <= REFINE_TOLERANCE]
    if not faces:
        return crop, matrix
    closest = min(faces, key=lambda face: np.hypot(*(face.landmarks - template.points).T).mean())
    matrix = compose(alignment_matrix(closest.landmarks, template), matrix)
    return warp(image, matrix, template.crop_size), matrix


def median_template(landmark_sets) -> np.ndarray:
    """The per-coordinate median of many faces' five landmarks ([n, 5, 2] -> [5, 2])."""
    landmark_sets = np.asarray(landmark_sets, np.float64)
    if landmark_sets.ndim != 3 or landmark_sets.shape[1:] != (5, 2) or not len(landmark_sets):
        raise UsageError(f"need [n >= 1, 5, 2] landmarks, got shape {landmark_sets.shape}")
    return np.median(landmark_sets, axis=0)
