"""Every setting of a prediction, as one frozen dataclass that checks its values once.

agetf.predict turns its flags into a PredictConfig (each flag's default is the field's); a
script builds one directly and calls agetf.serving.predict_lib.predict(config, paths). No
TensorFlow, so that a bad setting is one line before TensorFlow starts.

    from agetf.serving import predict_config, predict_lib
    predict_lib.predict(predict_config.PredictConfig(saved_model="runs/demo/saved_model"),
                        ["faces/"])
"""

import dataclasses
import os
from typing import Optional

from agetf import UsageError
from agetf.common.head_names import DEFAULT_INTERVAL
from agetf.data.image_files import DEFAULT_MAX_FILE_MB, DEFAULT_MAX_PIXELS, ReadLimits
from agetf.serving.video_frames import DEFAULT_VIDEO_FPS

DEFAULT_BATCH_SIZE = 32
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl"}  # --output's extension -> its format
# The widest --interval: the SavedModel's age_quantiles reach from 0.5% to 99.5%.
MAX_INTERVAL = 0.99


def output_format(path: str) -> str:
    """'csv' or 'jsonl' from the file's extension; UsageError in one line for any other."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in OUTPUT_FORMATS:
        raise UsageError(f"--output={path} has neither of the two formats; pass FILE.csv or "
                         "FILE.jsonl (the extension chooses)")
    return OUTPUT_FORMATS[extension]


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """Everything a prediction needs but its input paths.

    Attributes:
      saved_model: an exported SavedModel folder (a run's saved_model/, or a TF Serving
        model base); exactly one of saved_model and tflite.
      tflite: a TFLite model file (a run's tflite/model_float32.tflite).
      batch_size: face crops per call of the model.
      detect_faces: images are ordinary photos: find, align and predict each face; else
        each image is a face crop.
      annotate: a folder to draw each photo's faces into (implies detect_faces).
      min_confidence: face detection's smallest MTCNN confidence; None: the detector's
        default (agetf.serving.face_detection).
      min_face: face detection's smallest face box side in pixels; None: the default.
      max_pixels: most pixels an image is decoded to (a larger JPEG decodes at 1/2, 1/4 or
        1/8 scale, any other larger image is refused).
      max_file_mb: files larger than this (MB) are not read.
      max_detection_pixels: most pixels MTCNN is given (a larger photo is scaled down for
        detection); None: the default.
      output: also write one row per face to this .csv or .jsonl file.
      refine_alignment: find each aligned face's landmarks again on its crop and align once
        more.
      interval: the share of each face's age distribution its printed age interval holds
        (age_low to age_high; from a SavedModel with a histogram or range head).
      video_fps: frames of each video (and of the camera) predicted per second of it.
      max_frames: stop each video, and the camera, after this many predicted frames (0: no
        limit).
      camera: also read this camera (its number, 0 the first) until Ctrl-C or max_frames;
        implies detect_faces.
    """

    saved_model: Optional[str] = None
    tflite: Optional[str] = None
    batch_size: int = DEFAULT_BATCH_SIZE
    detect_faces: bool = False
    annotate: Optional[str] = None
    min_confidence: Optional[float] = None
    min_face: Optional[int] = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_mb: float = DEFAULT_MAX_FILE_MB
    max_detection_pixels: Optional[int] = None
    output: Optional[str] = None
    refine_alignment: bool = True
    interval: float = DEFAULT_INTERVAL
    video_fps: float = DEFAULT_VIDEO_FPS
    max_frames: int = 0
    camera: Optional[int] = None

    def __post_init__(self):
        if self.output:
            output_format(self.output)
        if bool(self.saved_model) == bool(self.tflite):
            raise UsageError("pass exactly one of --saved_model=DIR and --tflite=FILE")
        if self.tflite and not self.tflite.endswith(".tflite"):
            raise UsageError(f"--tflite={self.tflite} does not end in .tflite; pass a file "
                             "written by agetf.train --export_tflite")
        if self.batch_size < 1:
            raise UsageError(f"--batch_size={self.batch_size} must be >= 1; the default is "
                             f"{DEFAULT_BATCH_SIZE}")
        ReadLimits(self.max_pixels, self.max_file_mb)  # checks both
        if not 0 < self.interval <= MAX_INTERVAL:
            raise UsageError(f"--interval={self.interval} must be above 0 and at most "
                             f"{MAX_INTERVAL}; the default is {DEFAULT_INTERVAL}")
        if not self.video_fps > 0 or self.max_frames < 0 or (self.camera or 0) < 0:
            raise UsageError(f"--video_fps must be > 0 and --max_frames and --camera >= 0, got "
                             f"{self.video_fps}, {self.max_frames} and {self.camera}; the "
                             f"default --video_fps is {DEFAULT_VIDEO_FPS}")

    @property
    def model_path(self) -> str:
        """The SavedModel folder or the .tflite file."""
        return self.saved_model or self.tflite

    @property
    def photos(self) -> bool:
        """Whether images are photos to find faces in (--detect_faces, --annotate or
        --camera)."""
        return bool(self.detect_faces or self.annotate or self.camera is not None)

    @property
    def limits(self) -> ReadLimits:
        """What one input may cost (agetf.data.image_files.ReadLimits)."""
        return ReadLimits(self.max_pixels, self.max_file_mb)
