"""A video, or a camera, through the photo pipeline: every sampled frame's faces found,
aligned and predicted (agetf.serving.photo_pipeline), followed across frames
(agetf.serving.face_tracks), and, with --annotate, drawn into a video of the sampled frames.

Frames are streamed (agetf.serving.video_frames): memory holds one frame, the live tracks'
sums, and the rows handed to `on_row` (kept only for --output).
"""

import dataclasses
import os
import time
from typing import Callable, Optional, Union

import numpy as np

from agetf.evaluation import prediction_text
from agetf.serving import face_detection, face_tracks, photo_pipeline, video_frames
from agetf.serving.video_frames import VideoReadError

_FOURCC = {".avi": "MJPG"}  # --annotate's video codecs by extension; MPEG-4 Part 2 otherwise
# The extra numbers a face's prediction may carry beside its age and female probability.
_INTERVAL_FIELDS = ("age_low", "age_high")


@dataclasses.dataclass
class VideoPrediction:
    """One video's tracks, or the error that stopped it before any frame; `truncated` says
    why a file ended short of its frame count (its frames read are predicted). Seconds are
    sums over the sampled frames."""

    name: str
    tracks: list = dataclasses.field(default_factory=list)
    frames: int = 0  # sampled and predicted
    frames_read: int = 0
    faces: int = 0
    error: Optional[str] = None
    truncated: Optional[str] = None
    detection_seconds: float = 0.0
    alignment_seconds: float = 0.0
    prediction_seconds: float = 0.0
    seconds: float = 0.0
    rows: list = dataclasses.field(default_factory=list)  # --output's, kept by predict_lib


@dataclasses.dataclass(frozen=True)
class VideoSettings:
    """How a video is read and followed (PredictConfig's video fields)."""

    video_fps: float = video_frames.DEFAULT_VIDEO_FPS
    max_frames: int = 0
    refine: bool = True
    max_pixels: Optional[int] = None
    min_iou: float = face_tracks.DEFAULT_MIN_IOU
    max_missed: int = face_tracks.DEFAULT_MAX_MISSED


def predict_video(image_predictor, source: Union[str, int], detector,
                  settings: VideoSettings = VideoSettings(),
                  on_row: Optional[Callable] = None,
                  annotate_path: Optional[str] = None) -> VideoPrediction:
    """Predicts every sampled frame of a video file (a path) or camera (an int).

    Args:
      image_predictor: the export's serving_images signature or a TFLite model.
      source: a video file, or a camera's number (read until Ctrl-C or max_frames).
      detector: face_detection.load_detector()'s, or anything with its call and
        for_aligned_crops().
      settings: sampling, refinement and tracking.
      on_row: called with (frame, number of the face in the frame from 1, its
        photo_pipeline.FacePrediction, its face_tracks.Track) for each face of each frame.
      annotate_path: write the sampled frames with every face's box, landmarks and track
        caption drawn into this video file.

    Returns:
      The VideoPrediction; a video that cannot be opened, or holds no frame, has its error.
    """
    name = video_frames.camera_name(source) if isinstance(source, int) else source
    video = VideoPrediction(name=name)
    try:
        stream = video_frames.open_frames(source, settings.video_fps, settings.max_frames,
                                          settings.max_pixels)
    except VideoReadError as error:
        video.error = str(error)
        return video
    tracker = face_tracks.FaceTracker(settings.min_iou, settings.max_missed)
    writer = None
    try:
        for frame in stream:
            faces, tracks = _predict_frame(image_predictor, video, frame, detector, settings,
                                           tracker)
            for number, (face, track) in enumerate(zip(faces, tracks), start=1):
                if on_row is not None:
                    on_row(frame, number, face, track)
            if annotate_path:
                writer = writer or _video_writer(annotate_path, frame.image, settings.video_fps)
                writer.write(_drawn_frame(frame.image, faces, tracks))
    except VideoReadError as error:  # a video without a frame
        video.error = str(error)
    except KeyboardInterrupt:
        if not isinstance(source, int):
            raise
        # A camera runs until Ctrl-C: what was seen is reported as for a file.
    finally:
        stream.close()
        if writer is not None:
            writer.release()
    video.frames_read, video.truncated = stream.frames_read, stream.truncated
    video.tracks = tracker.tracks()
    return video


def _predict_frame(image_predictor, video, frame, detector, settings, tracker):
    """(the frame's FacePredictions, the Track of each); adds its times to the video's."""
    start = time.perf_counter()
    photo = photo_pipeline.predict_photo(image_predictor, video.name, frame.image, detector,
                                         settings.refine)
    seconds = time.perf_counter() - start
    video.frames += 1
    video.faces += len(photo.faces)
    video.seconds += seconds
    video.detection_seconds += photo.detection_seconds
    video.alignment_seconds += photo.alignment_seconds
    video.prediction_seconds += seconds - photo.detection_seconds - photo.alignment_seconds
    tracks = tracker.update(frame.time_s, [face.box for face in photo.faces])
    for face, track in zip(photo.faces, tracks):
        track.add(frame.time_s, face.box, age=face.age,
                  female_probability=face.female_probability,
                  **{field: getattr(face, field, None) for field in _INTERVAL_FIELDS})
    return photo.faces, tracks


def track_caption(track) -> str:
    """The label drawn above a tracked face: its number and smoothed age and gender."""
    return f"#{track.number} " + prediction_text.face_caption(track.age,
                                                              track.female_probability)


def _drawn_frame(image, faces, tracks):
    import cv2  # loaded already: the frames were read with it

    picture = face_detection.annotate(image, [face.face for face in faces],
                                      [track_caption(track) for track in tracks])
    return cv2.cvtColor(np.asarray(picture), cv2.COLOR_RGB2BGR)


def _video_writer(path: str, first_image, fps: float):
    """A cv2.VideoWriter of frames the size of first_image at fps; VideoReadError where
    OpenCV cannot write one there."""
    import cv2  # as in _drawn_frame

    height, width = first_image.shape[:2]
    fourcc = _FOURCC.get(os.path.splitext(path)[1].lower(), "mp4v")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise VideoReadError(f"cannot write the annotated video {path} ({fourcc}); check that "
                             "the --annotate folder is writable")
    return writer
