"""Finding faces in ordinary photos: MTCNN boxes, confidences and five landmarks.

The detector is MTCNN from the `mtcnn` package (TensorFlow networks whose weights ship
inside its wheel, so nothing is downloaded at run time). agetf.serving.face_alignment maps each
face's landmarks onto the training crops' template, so the crop fed to the model is framed
like the training crops whatever the face's size, place or roll. One MTCNN is built per
process (`shared_mtcnn`: building it loads three networks) and every detector shares it,
whatever its thresholds.

The defaults were measured with scripts/benchmark_wild_photos on 600 scenes (two seeds)
made from UTKFace test crops pasted into scikit-image's photos: at confidence 0.8 the face
was found in 99.0% and 100% of the scenes with 0.003 false faces per scene; 0.9 missed up
to 2.0% of the faces, 0.7 gave up to 0.010 false faces per scene. OpenCV's Haar cascade,
the detector before this one, found 93.7% with 0.61 false faces per scene on the same
scenes, and its crops (a margin around an upright box) aged the faces 7.8 years (median)
away from the crops themselves, against 0.8 years with MTCNN and alignment; it was dropped.
"""

import dataclasses
import functools
import math
from typing import Optional

import numpy as np

from agetf import UsageError

# MTCNN's last-stage (ONet) confidence, and the smallest face box side searched for, in
# photo pixels (smaller faces are mostly texture, and too small to age).
DEFAULT_MIN_CONFIDENCE = 0.8
DEFAULT_MIN_FACE = 30
MTCNN_MIN_FACE = 20  # the min_face_size mtcnn 1.0's pyramid works at (MTCNNDetector)
REFINE_MIN_CONFIDENCE = 0.5  # finding an aligned face again (for_aligned_crops)
# The most pixels MTCNN is given. It holds ~130 bytes per pixel (the photo as float32, its
# normalised copy, every pyramid level and PNet's outputs at once: 6 MP took 0.85 GB over
# its 0.65 GB at rest), so 4 MP keeps a photo's detection near 0.5 GB. A photo larger once
# scaled for min_face is scaled down further: in it, faces under min_face times that extra
# factor are not found (34 px instead of 30 in a 12 MP phone photo).
DEFAULT_MAX_PIXELS = 4_000_000
MTCNN_INSTALL = "pip install 'mtcnn>=1.0,<2'"


class DetectorUnavailable(UsageError, RuntimeError):
    """The mtcnn package (or OpenCV) is missing."""


@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: left, top, width, height."""

    left: int
    top: int
    width: int
    height: int

    @property
    def right(self):
        return self.left + self.width

    @property
    def bottom(self):
        return self.top + self.height


@dataclasses.dataclass(frozen=True, eq=False)
class Face:
    """One detection: its box, confidence and five landmarks.

    landmarks: float [5, 2] (x, y) photo pixels in face_alignment.LANDMARK_NAMES order.
    """

    box: Box
    confidence: float
    landmarks: np.ndarray


@functools.lru_cache(maxsize=1)
def shared_mtcnn():
    """The process's one MTCNN (building it loads three TensorFlow networks)."""
    try:
        from mtcnn import MTCNN
    except ImportError:
        raise DetectorUnavailable(f"face detection needs the mtcnn package; install it with "
                                  f"{MTCNN_INSTALL}") from None
    return MTCNN(stages="face_and_landmarks_detection", device="CPU:0")


class MTCNNDetector:
    """A callable from a uint8 RGB photo to its Faces, largest first: MTCNN faces at least
    min_face pixels and min_confidence sure, found in the photo scaled to at most
    max_pixels."""

    def __init__(self, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                 min_face: int = DEFAULT_MIN_FACE, mtcnn=None,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        if not 0 <= min_confidence <= 1 or min_face < 1:
            raise UsageError(f"--min_confidence must be in [0, 1] and --min_face >= 1, got "
                             f"{min_confidence} and {min_face}; the defaults are "
                             f"{DEFAULT_MIN_CONFIDENCE} and {DEFAULT_MIN_FACE}")
        if max_pixels < 12 * 12:  # PNet's window
            raise UsageError(f"--max_detection_pixels must be >= 144, got {max_pixels}; the "
                             f"default is {DEFAULT_MAX_PIXELS}")
        self.min_confidence = min_confidence
        self.min_face = min_face
        self.max_pixels = max_pixels
        self.mtcnn = mtcnn if mtcnn is not None else shared_mtcnn()

    def for_aligned_crops(self):
        """The detector that refines alignments (face_alignment.refine): on the aligned crop,
        at MTCNN's own scale (as the template was measured), and at REFINE_MIN_CONFIDENCE,
        since the face is known to be there."""
        return MTCNNDetector(REFINE_MIN_CONFIDENCE, MTCNN_MIN_FACE, self.mtcnn, self.max_pixels)

    def __call__(self, image) -> list:
        import cv2  # checked by load_detector, which names the install command if absent

        image = np.ascontiguousarray(image, dtype=np.uint8)
        height, width = image.shape[:2]
        # mtcnn 1.0's image pyramid is sized for its default min_face_size only: above
        # about 23 its last level is under PNet's 12 px window and the whole photo fails
        # (it answers "no face"); below 20 it stops short of faces that fill the photo.
        # So the photo is scaled to make min_face MTCNN_MIN_FACE pixels instead, and
        # further down where that leaves more than max_pixels (MTCNN's memory).
        factor = min(MTCNN_MIN_FACE / self.min_face,
                     math.sqrt(self.max_pixels / max(width * height, 1)))
        scaled_width, scaled_height = round(width * factor), round(height * factor)
        if min(scaled_width, scaled_height) < 12:  # PNet's window
            return []
        if (scaled_width, scaled_height) != (width, height):
            image = cv2.resize(image, (scaled_width, scaled_height),
                               interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
        rows = np.asarray(self.mtcnn.detect_faces(
            image, output_type="numpy", box_format="xyxy", fit_to_image=True,
            min_face_size=MTCNN_MIN_FACE, threshold_onet=self.min_confidence),
            np.float64).reshape(-1, 16)
        # A row: image index, x1, y1, x2, y2, confidence, five x, five y; back to photo
        # pixels (pixel centres: x = (x' + 0.5) / fx - 0.5).
        fx, fy = scaled_width / width, scaled_height / height
        xs = (rows[:, [1, 3, *range(6, 11)]] + 0.5) / fx - 0.5
        ys = (rows[:, [2, 4, *range(11, 16)]] + 0.5) / fy - 0.5
        faces = []
        for x, y, confidence in zip(xs, ys, rows[:, 5]):
            left, top = int(round(max(x[0], 0))), int(round(max(y[0], 0)))
            right, bottom = int(round(min(x[1], width))), int(round(min(y[1], height)))
            # MTCNN's box regression can shrink a window well below min_face: a nose or an
            # eye taken for a face (the false faces inside pasted crops in the benchmark).
            if confidence < self.min_confidence or max(right - left, bottom - top) < self.min_face:
                continue
            faces.append(Face(Box(left, top, right - left, bottom - top), float(confidence),
                              np.stack([x[2:], y[2:]], axis=1)))
        return sorted(faces, key=lambda face: (-face.box.width * face.box.height, face.box.top,
                                               face.box.left))


def load_detector(min_confidence: Optional[float] = None, min_face: Optional[int] = None,
                  max_pixels: Optional[int] = None):
    """An MTCNNDetector (None: the defaults); DetectorUnavailable names the install command."""
    try:
        import cv2  # noqa: F401  (resizing here, warping in face_alignment)
    except ImportError:
        raise DetectorUnavailable("face detection needs OpenCV; install it with "
                                  "pip install 'opencv-python-headless>=4.8,<5'") from None
    return MTCNNDetector(DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence,
                         DEFAULT_MIN_FACE if min_face is None else min_face,
                         max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)


def detect_faces(image: np.ndarray, detector=None) -> list:
    """The faces in a uint8 RGB image, largest first (a default detector if none given)."""
    detector = detector if detector is not None else load_detector()
    return detector(image)


def annotate(image: np.ndarray, faces, captions):
    """A Pillow image of the photo with each face's box and five landmarks drawn, and its
    caption above the box."""
    from PIL import Image, ImageDraw, ImageFont  # --annotate only

    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(picture)
    line = max(2, round(min(picture.size) / 200))
    font = ImageFont.load_default(size=max(12, min(picture.size) // 30))
    for face, caption in zip(faces, captions):
        box = face.box
        draw.rectangle((box.left, box.top, box.right - 1, box.bottom - 1), outline=(255, 40, 40),
                       width=line)
        radius = max(2, round(min(box.width, box.height) / 40))
        for x, y in face.landmarks:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(40, 255, 40),
                         outline=(0, 0, 0))
        text_box = draw.textbbox((0, 0), caption, font=font)
        text_height = text_box[3] - text_box[1] + 2 * line
        y = box.top - text_height if box.top >= text_height else box.bottom
        draw.rectangle((box.left, y, box.left + text_box[2] + 2 * line, y + text_height),
                       fill=(255, 40, 40))
        draw.text((box.left + line, y + line - text_box[1]), caption, fill=(255, 255, 255),
                  font=font)
    return picture
