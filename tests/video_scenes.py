"""Test videos: synthetic faces (agetf.data.synthetic) moving across a black background,
written with OpenCV, and a detector that finds them without MTCNN.

The detector takes every bright blob of the frame for a face, with the five landmarks where
the face template puts them in a crop of the blob's size, so the aligned crop is the pasted
face itself. It reads the decoded frame, so it finds what the video holds: a face left out
of a frame is not found there.
"""

import os

import cv2
import numpy as np

from agetf.data import synthetic
from agetf.serving import face_alignment, face_detection

WIDTH, HEIGHT = 320, 160
FACE_SIZE = 64
FPS = 10
FRAMES = 30
# Face A walks right 4 px a frame along the top (and back after frame 30); face B stands
# still below it, and is out of frames 10-13 (sampled at 5 fps: frames 10 and 12, two
# sampled frames in a row).
FACE_A_AGE, FACE_B_AGE = 30, 70
B_HIDDEN = range(10, 14)


def faces(seed=3):
    """The two faces' pixels (uint8 [FACE_SIZE, FACE_SIZE, 3])."""
    rng = np.random.default_rng(seed)
    return (synthetic.render_face(FACE_A_AGE, 1, 0, rng, size=FACE_SIZE),
            synthetic.render_face(FACE_B_AGE, 0, 2, rng, size=FACE_SIZE))


def face_boxes(index):
    """Where faces A and B are in frame `index` (B None where hidden)."""
    step = index % 60 if index % 60 < 30 else 60 - index % 60  # back and forth after 30
    a = face_detection.Box(8 + 4 * step, 8, FACE_SIZE, FACE_SIZE)
    b = None if index in B_HIDDEN else face_detection.Box(200, 88, FACE_SIZE, FACE_SIZE)
    return a, b


def scene_frame(index, pixels=None):
    """Frame `index` as RGB uint8."""
    pixels = pixels or faces()
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for box, face in zip(face_boxes(index), pixels):
        if box is not None:
            frame[box.top:box.bottom, box.left:box.right] = face
    return frame


def write_video(path, frames=FRAMES, fps=FPS, fourcc="MJPG", make_frame=scene_frame):
    """Writes frames 0..frames-1 of make_frame to path; returns path."""
    pixels = faces()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (WIDTH, HEIGHT))
    assert writer.isOpened(), (path, fourcc)
    for index in range(frames):
        writer.write(cv2.cvtColor(make_frame(index, pixels), cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


class BlobDetector:
    """Finds each bright blob at least min_face pixels wide as a face (see the module)."""

    def __init__(self, min_face=20):
        self.min_face = min_face
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        mask = (np.asarray(image).max(axis=2) > 20).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        found = []
        for left, top, width, height, _ in stats[1:count]:
            if min(width, height) < self.min_face:
                continue
            template = face_alignment.default_template()
            scale = np.array([width, height]) / template.crop_size
            landmarks = template.points * scale + [left, top]
            found.append(face_detection.Face(face_detection.Box(int(left), int(top), int(width),
                                                                int(height)), 0.99, landmarks))
        return sorted(found, key=lambda face: (face.box.top, face.box.left))

    def for_aligned_crops(self):
        return self


def nearest_box(boxes, box):
    """The one of boxes (None skipped) nearest to box's centre."""
    def distance(other):
        return abs(other.left + other.width / 2 - box.left - box.width / 2) + abs(
            other.top + other.height / 2 - box.top - box.height / 2)

    return min((b for b in boxes if b is not None), key=distance)


def broken_videos(folder, scene_avi):
    """{name: path} of videos that cannot be read whole."""
    paths = {name: os.path.join(folder, name) for name in
             ("random.mp4", "empty.mkv", "no_frames.avi", "truncated.avi")}
    with open(paths["random.mp4"], "wb") as f:
        f.write(np.random.default_rng(0).bytes(5000))
    open(paths["empty.mkv"], "wb").close()
    writer = cv2.VideoWriter(paths["no_frames.avi"], cv2.VideoWriter_fourcc(*"MJPG"), 10,
                             (64, 48))
    writer.release()
    with open(scene_avi, "rb") as f:
        data = f.read()
    with open(paths["truncated.avi"], "wb") as f:
        f.write(data[:len(data) // 2])
    return paths
