"""Frames of a video file or a camera, sampled at a rate and streamed one at a time.

OpenCV reads the video (`cv2.VideoCapture`: FFmpeg for files, the system's camera API for
`--camera=N`). Only the frame being predicted is held, so memory does not grow with the
video's length; frames that are not sampled are grabbed (demuxed) but never decoded to
pixels. A file's times come from its frame rate; a camera's from the clock, since a
camera's advertised rate is often not the one it delivers.
"""

import dataclasses
import os
import stat
import time
from typing import Callable, Iterator, Optional, Union

import numpy as np

from agetf import UsageError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
DEFAULT_VIDEO_FPS = 5.0
# What a file that gives no frame rate (0 or NaN in its header) is taken to run at.
FALLBACK_SOURCE_FPS = 30.0
# Containers without a frame index (MKV, WebM) give their frame count from duration times
# rate, so a file is called truncated only when it ends this much short of its count.
_TRUNCATED_SHORTFALL = 0.02
camera_clock = time.monotonic  # a camera's frames' times (a test's clock replaces it)


class VideoReadError(UsageError):
    """A video that cannot be opened or read, or that holds no frame."""


@dataclasses.dataclass
class Frame:
    """One sampled frame: its number in the video (from 0), its time, its RGB pixels."""

    index: int
    time_s: float
    image: np.ndarray


def is_video(path) -> bool:
    """Whether a path names a video file by its extension."""
    return isinstance(path, str) and path.lower().endswith(VIDEO_EXTENSIONS)


def camera_name(camera: int) -> str:
    """How a camera is named in the printed lines and the --output rows."""
    return f"camera:{camera}"


def open_capture(source: Union[str, int]):
    """A cv2.VideoCapture of a regular video file or of camera number `source`.

    Raises:
      VideoReadError: in one line, where it is not a regular file or cannot be opened.
    """
    import cv2  # OpenCV only once a video is read; face detection needs it too

    if isinstance(source, str):
        try:
            mode = os.stat(source).st_mode
        except OSError as error:
            raise VideoReadError(f"cannot read {source} as a video ({error.strerror})") from None
        if not stat.S_ISREG(mode):  # FFmpeg would wait forever on a FIFO
            raise VideoReadError(f"{source} is not a regular file, not read")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        what = f"camera {source}" if isinstance(source, int) else source
        raise VideoReadError(f"cannot open {what} as a video (not a video OpenCV can read, "
                             "or damaged); pass a video file or check the camera number")
    return capture


@dataclasses.dataclass
class FrameStream:
    """Sampled frames of one capture, in order; after iterating, `frames_read` counts every
    frame read (sampled or not) and `truncated` says why the file ended early, if it did.

    Attributes:
      capture: a cv2.VideoCapture (or anything with grab, retrieve, get and release).
      name: the video as printed.
      video_fps: frames sampled per second of the video.
      max_frames: stop after this many sampled frames (0: no limit).
      clock: seconds since the start for a camera (time.monotonic); None for a file, whose
        times come from its frame rate.
      max_pixels: a video whose frames are larger is refused (VideoReadError).
    """

    capture: object
    name: str
    video_fps: float = DEFAULT_VIDEO_FPS
    max_frames: int = 0
    clock: Optional[Callable[[], float]] = None
    max_pixels: Optional[int] = None
    frames_read: int = 0
    truncated: Optional[str] = None

    def __post_init__(self):
        import cv2  # as in open_capture

        rate = self.capture.get(cv2.CAP_PROP_FPS)
        self.source_fps = rate if rate and np.isfinite(rate) and rate > 0 else FALLBACK_SOURCE_FPS
        self.declared_frames = int(max(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0, 0))
        width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise VideoReadError(f"{self.name}'s frames are {width}x{height} pixels, more than "
                                 f"--max_pixels={self.max_pixels}; raise it to read this video")

    def __iter__(self) -> Iterator[Frame]:
        import cv2  # as in open_capture

        start, next_time, sampled = None, 0.0, 0
        period = 1.0 / self.video_fps
        while not self.max_frames or sampled < self.max_frames:
            if not self.capture.grab():
                break
            index = self.frames_read
            self.frames_read += 1
            now = self.clock() if self.clock else index / self.source_fps
            start = now if start is None else start  # a camera's first frame is at 0
            now -= start
            # Half a source frame of slack: at 25 fps sampled at 5, frames 0, 5, 10...
            if now + 0.5 / self.source_fps < next_time:
                continue
            ok, image = self.capture.retrieve()
            if not ok or image is None:
                break
            # A camera read slower than the rate: sample the next frame, do not catch up.
            next_time = max(next_time + period, now)
            sampled += 1
            yield Frame(index, round(now, 3), cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        self._check_ended(sampled)

    def _check_ended(self, sampled):
        if self.frames_read == 0:
            raise VideoReadError(f"{self.name} holds no frame (empty, or its frames cannot be "
                                 "decoded)")
        stopped_early = self.max_frames and sampled >= self.max_frames
        short = self.declared_frames - self.frames_read
        if (not stopped_early and self.clock is None
                and short > max(1, _TRUNCATED_SHORTFALL * self.declared_frames)):
            self.truncated = (f"{self.name} ended after {self.frames_read} of the "
                              f"{self.declared_frames} frames its header gives (truncated or "
                              "damaged); the frames read were predicted")

    def close(self):
        self.capture.release()


def open_frames(source: Union[str, int], video_fps: float = DEFAULT_VIDEO_FPS,
                max_frames: int = 0, max_pixels: Optional[int] = None) -> FrameStream:
    """The FrameStream of a video file, or of camera number `source` (an int), timed by the
    clock; VideoReadError in one line where it cannot be opened."""
    capture = open_capture(source)
    camera = isinstance(source, int)
    try:
        return FrameStream(capture, camera_name(source) if camera else source, video_fps,
                           max_frames, camera_clock if camera else None, max_pixels)
    except VideoReadError:
        capture.release()
        raise
