"""Photos from the wild: find the faces, warp each into a crop framed like the training
crops, and predict all of a photo's faces in one call.

Faces are found with MTCNN (agetf.serving.face_detection) and aligned by their five
landmarks (agetf.serving.face_alignment).
"""

import dataclasses
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from agetf.modeling import outputs as model_outputs
from agetf.serving import face_alignment, face_detection


@dataclasses.dataclass
class FacePrediction:
    """One face found in a photo: the detection, where its crop lies, the prediction."""

    face: object  # face_detection.Face: box, confidence and five landmarks
    matrix: object  # 2x3, photo pixels -> the crop fed to the model (face_alignment.warp)
    age: Optional[float]  # None from a gender-only model
    age_range: Optional[int] = None
    female_probability: Optional[float] = None
    age_low: Optional[float] = None  # the central age interval and spread, where predicted
    age_high: Optional[float] = None
    age_std: Optional[float] = None

    @property
    def box(self):
        return self.face.box


@dataclasses.dataclass
class PhotoPrediction:
    """A photo's faces (empty when none was found), or the error that stopped it, the
    seconds spent finding the faces and warping them into crops, and the photo's pixels per
    pixel of the image they were found in (faces' boxes are in the latter; 2, 4 or 8 where
    a large JPEG was decoded at reduced scale)."""

    path: str
    faces: list = dataclasses.field(default_factory=list)
    error: Optional[str] = None
    detection_seconds: Optional[float] = None
    alignment_seconds: Optional[float] = None
    scale: float = 1.0


def face_crops(image, faces, refiner=None):
    """(crops [n, size, size, 3] uint8, their 2x3 matrices): each face warped by its five
    landmarks into a crop framed like the training crops (agetf.serving.face_alignment), and
    with a refiner (a detector's for_aligned_crops()) refined by the landmarks found on it."""
    size = face_alignment.CROP_SIZE
    aligned = [face_alignment.align_face(image, face.landmarks, detector=refiner)
               for face in faces]
    crops = np.stack([crop for crop, _ in aligned]) if aligned \
        else np.zeros((0, size, size, 3), np.uint8)
    return crops, [matrix for _, matrix in aligned]


def predict_photo(image_predictor, path: str, image, detector,
                  refine: bool = True) -> PhotoPrediction:
    """Finds the faces in one photo (uint8 RGB) with detector (face_detection.load_detector),
    aligns each into a training-style crop (refined by the landmarks found on that crop
    unless refine is False), and predicts all of them in one call."""
    photo = PhotoPrediction(path=path)
    start = time.perf_counter()
    faces = detector(image)
    photo.detection_seconds = time.perf_counter() - start
    start = time.perf_counter()
    crops, matrices = face_crops(image, faces, detector.for_aligned_crops() if refine else None)
    photo.alignment_seconds = time.perf_counter() - start
    if not faces:
        return photo
    predicted = model_outputs.from_serving(image_predictor(images=tf.constant(crops)))
    for face, matrix, outputs in zip(faces, matrices, predicted.faces(len(faces))):
        photo.faces.append(FacePrediction(face=face, matrix=matrix, age=outputs.age,
                                          age_range=outputs.age_range,
                                          female_probability=outputs.female_probability,
                                          age_low=outputs.age_low, age_high=outputs.age_high,
                                          age_std=outputs.age_std))
    return photo


def photo_box(box, scale: float):
    """A box found in a photo decoded at 1/scale, in the photo's own pixels."""
    if scale == 1:
        return box
    return face_detection.Box(*(int(round(value * scale))
                                for value in (box.left, box.top, box.width, box.height)))
