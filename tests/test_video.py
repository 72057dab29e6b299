"""agetf.predict on videos: sampled frames' faces found, predicted and followed across frames,
one line per track, --output rows with frame, time and track, an annotated video, broken
videos as one line each, and the camera through the same path as a file.

The videos are synthetic faces moving across a black background (tests/video_scenes.py),
found by a blob detector; the model is a stand-in whose age follows the crop's brightness,
except where the tiny export checks the ages the model itself gives.
"""

import csv
import io
import os
import subprocess
import sys
import tracemalloc

import cv2
import numpy as np
import pytest

from agetf import UsageError
from agetf.serving import (
    face_detection,
    photo_pipeline,
    predict_lib,
    predictors,
    video_frames,
    video_pipeline,
)
from agetf.serving.predict_config import PredictConfig

import video_scenes


def brightness_model(images):
    """A stand-in image predictor: age a quarter of the crop's mean pixel, p_female 0.3."""
    crops = np.asarray(images, np.float64)
    count = len(crops)
    return {"age": crops.reshape(count, -1).mean(axis=1) / 4,
            "female_probability": np.full(count, 0.3)}


@pytest.fixture
def stand_ins(monkeypatch):
    """run_photos with the blob detector and the brightness model."""
    detector = video_scenes.BlobDetector()
    monkeypatch.setattr(face_detection, "load_detector", lambda *args: detector)
    monkeypatch.setattr(predictors, "load_image_predictor", lambda path: brightness_model)
    return detector


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    """scene.avi (two faces, one moving, one hidden for two sampled frames) and a still of
    its first frame, still.png."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("scene")
    video_scenes.write_video(folder / "scene.avi")
    Image.fromarray(video_scenes.scene_frame(0)).save(folder / "still.png")
    return str(folder)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


SUMMARY_STARTS = ("Images: ", "Videos: ", "Time per photo", "Frames per second")


def blocks_of(text):
    """{input's base name: its printed lines after the first}, the summary left out."""
    return {block.splitlines()[0].rsplit("/", 1)[-1]: [
        line for line in block.splitlines()[1:] if not line.startswith(SUMMARY_STARTS)]
        for block in text.replace("Predicting for video ", "Predicting for image ")
        .split("Predicting for image ")[1:]}


def still_ages(image_predictor, detector, index=0):
    """(age of face A, age of face B or None where hidden) as predicted on the uncompressed
    frame `index`."""
    frame = video_scenes.scene_frame(index)
    photo = photo_pipeline.predict_photo(image_predictor, "still", frame, detector, refine=False)
    boxes = [face.box for face in photo.faces]
    return tuple(None if box is None else
                 photo.faces[boxes.index(video_scenes.nearest_box(boxes, box))].age
                 for box in video_scenes.face_boxes(index))


def test_a_video_gives_a_line_per_track_rows_per_frame_and_an_annotated_video(
        stand_ins, scene_dir, tmp_path):
    out, output = io.StringIO(), tmp_path / "faces.csv"
    annotated = tmp_path / "annotated"
    counts = predict_lib.predict(PredictConfig(
        saved_model="unused", detect_faces=True, refine_alignment=False, output=str(output),
        annotate=str(annotated)), [scene_dir], out=out)
    blocks = blocks_of(out.getvalue())
    assert counts["videos"] == 1 and counts["tracks"] == 2 and counts["errors"] == 0
    assert len(blocks["still.png"]) == 2 and blocks["still.png"][0].startswith("Face 1 at")
    # Face A is seen from 0 s to 2.8 s in all 15 sampled frames; face B, hidden in frames
    # 10 and 12 (two sampled frames in a row), keeps its track: 13 frames.
    lines = blocks["scene.avi"]
    assert len(lines) == 2
    assert lines[0].startswith("Track 1: 0.0-2.8 s, 15 frames: predicted age ")
    assert lines[1].startswith("Track 2: 0.0-2.8 s, 13 frames: predicted age ")
    assert lines[0].endswith("gender male (p_female=0.30)")
    assert "Videos: 1, unreadable: 0, frames predicted: 15, tracks: 2" in out.getvalue()
    assert "Images: 1, unreadable: 0, faces: 2, images without a face: 0" in out.getvalue()

    rows = [row for row in read_csv(output) if row["file"].endswith("scene.avi")]
    assert len(rows) == 15 + 13
    assert sorted({int(row["frame"]) for row in rows}) == list(range(0, 30, 2))
    assert all(float(row["time_s"]) == int(row["frame"]) / video_scenes.FPS for row in rows)
    b_frames = sorted(int(row["frame"]) for row in rows if row["track"] == "2")
    assert b_frames == [f for f in range(0, 30, 2) if f not in video_scenes.B_HIDDEN]
    for row in rows:  # each row's box is where its track's face is in that frame
        a, b = video_scenes.face_boxes(int(row["frame"]))
        expected = a if row["track"] == "1" else b
        assert abs(int(row["box_left"]) - expected.left) <= 2, row
    # The track's age is the mean of its frames' ages, near the age of its face in a still.
    expected = still_ages(brightness_model, video_scenes.BlobDetector())
    for track, line in enumerate(lines, start=1):
        ages = [float(row["age"]) for row in rows if row["track"] == str(track)]
        assert f"predicted age {np.mean(ages):.1f}," in line
        assert np.mean(ages) == pytest.approx(expected[track - 1], abs=1.0)
    assert abs(expected[0] - expected[1]) > 3  # the two faces differ, so the test could fail

    # The annotated video: the 15 sampled frames, with a red box on face A's edge.
    assert sorted(os.listdir(annotated)) == ["scene.avi", "still.png"]
    capture = cv2.VideoCapture(str(annotated / "scene.avi"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    assert len(frames) == 15
    a, _ = video_scenes.face_boxes(2)
    red = frames[1][a.top + a.height // 2, a.left].astype(int)
    assert red[0] > 180 and red[1] < 100, red


def test_broken_videos_cost_one_line_each_and_the_rest_is_predicted(stand_ins, scene_dir,
                                                                     tmp_path):
    paths = video_scenes.broken_videos(str(tmp_path), os.path.join(scene_dir, "scene.avi"))
    out, output = io.StringIO(), tmp_path / "rows.jsonl"
    inputs = [paths["random.mp4"], paths["empty.mkv"], paths["no_frames.avi"],
              os.path.join(scene_dir, "still.png"), paths["truncated.avi"]]
    counts = predict_lib.predict(PredictConfig(saved_model="unused", detect_faces=True,
                                               refine_alignment=False, output=str(output)),
                                 inputs, out=out)
    blocks = blocks_of(out.getvalue())
    for name in ("random.mp4", "empty.mkv"):
        assert blocks[name] == [f"Error: cannot open {paths[name]} as a video (not a video "
                                "OpenCV can read, or damaged); pass a video file or check the "
                                "camera number"]
    assert blocks["no_frames.avi"] == [f"Error: {paths['no_frames.avi']} holds no frame (empty, "
                                       "or its frames cannot be decoded)"]
    assert [line.split(":")[0] for line in blocks["still.png"]] == ["Face 1 at x=8 y=8 w=64 h=64",
                                                                   "Face 2 at x=200 y=88 w=64 h=64"]
    # The truncated file: the tracks of the frames read, then one line.
    *tracks, error = blocks["truncated.avi"]
    assert tracks and all(line.startswith("Track ") for line in tracks)
    assert error.startswith(f"Error: {paths['truncated.avi']} ended after ")
    assert counts["errors"] == 3 and counts["images"] == 5
    assert "Videos: 4, unreadable: 3," in out.getvalue()
    import json

    with open(output) as f:
        rows = [json.loads(line) for line in f]
    errors = {os.path.basename(row["file"]): row["error"] for row in rows if row["face"] == 0}
    assert set(errors) == {"random.mp4", "empty.mkv", "no_frames.avi", "truncated.avi"}
    assert errors["truncated.avi"] == error.removeprefix("Error: ")


def test_a_video_needs_detect_faces_and_bad_video_settings_are_refused(scene_dir):
    video = os.path.join(scene_dir, "scene.avi")
    with pytest.raises(UsageError, match=r"scene.avi is a video; pass --detect_faces"):
        predict_lib.predict(PredictConfig(saved_model="unused"), [video])
    for bad in (dict(video_fps=0), dict(max_frames=-1), dict(camera=-1)):
        with pytest.raises(UsageError, match=r"--video_fps must be > 0"):
            PredictConfig(saved_model="unused", **bad)
    assert PredictConfig(saved_model="unused", camera=0).photos


class InterruptedCapture:
    """A file's capture that raises KeyboardInterrupt (Ctrl-C) at grab number `after`."""

    def __init__(self, path, after):
        self.capture, self.after, self.grabs = cv2.VideoCapture(path), after, 0

    def grab(self):
        self.grabs += 1
        if self.grabs > self.after:
            raise KeyboardInterrupt
        return self.capture.grab()

    def __getattr__(self, name):
        return getattr(self.capture, name)


@pytest.mark.parametrize("max_frames, interrupt_after, frames", [(4, None, 4), (0, 9, 5)])
def test_the_camera_runs_until_max_frames_or_ctrl_c(stand_ins, scene_dir, monkeypatch,
                                                   tmp_path, max_frames, interrupt_after,
                                                   frames):
    """--camera=N goes through the path of a file: the capture is the scene's (there is no
    camera here), stopped by --max_frames or by Ctrl-C, and what was seen is reported."""
    video = os.path.join(scene_dir, "scene.avi")
    opened = []

    def open_camera(source):
        opened.append(source)
        return (InterruptedCapture(video, interrupt_after) if interrupt_after
                else cv2.VideoCapture(video))

    monkeypatch.setattr(video_frames, "open_capture", open_camera)
    ticks = iter(range(1000))  # the camera delivers a frame every 0.1 s
    monkeypatch.setattr(video_frames, "camera_clock", lambda: next(ticks) / 10)
    out, output = io.StringIO(), tmp_path / "camera.csv"
    counts = predict_lib.predict(PredictConfig(
        saved_model="unused", camera=1, max_frames=max_frames, refine_alignment=False,
        output=str(output), annotate=str(tmp_path / "drawn")), [], out=out)
    assert opened == [1]
    text = out.getvalue()
    assert text.startswith("Predicting for video camera:1\nTrack 1: 0.0-")
    assert f"Videos: 1, unreadable: 0, frames predicted: {frames}, tracks: 2" in text
    assert counts["tracks"] == 2
    assert {row["file"] for row in read_csv(output)} == {"camera:1"}
    assert os.listdir(tmp_path / "drawn") == ["camera1.mp4"]


def test_memory_stays_flat_in_the_videos_length(tmp_path):
    """Peak memory of a 10 s video is that of a 2 s one: frames are streamed, tracks keep sums."""
    def peak(frames):
        path = video_scenes.write_video(tmp_path / f"{frames}.avi", frames=frames)
        tracemalloc.start()
        video = video_pipeline.predict_video(brightness_model, path,
                                             video_scenes.BlobDetector(),
                                             video_pipeline.VideoSettings(refine=False))
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert video.frames == (frames + 1) // 2
        return peak_bytes

    frame_bytes = video_scenes.WIDTH * video_scenes.HEIGHT * 3
    short, long = peak(20), peak(100)
    assert long < short + 2 * frame_bytes, (short, long)


@pytest.fixture(scope="module")
def tiny_image_predictor(tiny_export):
    return predictors.load_image_predictor(tiny_export.saved_model)


def test_track_ages_are_the_models_ages_of_the_faces(tiny_image_predictor, tmp_path):
    """With the tiny export, on a losslessly written video (HuffYUV), so that the frames read
    are the frames written: each track's age is the mean of the model's ages of its face in
    the stills of its frames, and the still face's track has that face's age."""
    path = video_scenes.write_video(tmp_path / "lossless.avi", fourcc="HFYU")
    detector = video_scenes.BlobDetector()
    ages = []

    def keep(frame, number, face, track):
        ages.append((track.number, face.age))

    video = video_pipeline.predict_video(tiny_image_predictor, path, detector,
                                         video_pipeline.VideoSettings(refine=False), keep)
    assert [track.frames for track in video.tracks] == [15, 13]
    stills = {index: still_ages(tiny_image_predictor, detector, index)
              for index in range(0, video_scenes.FRAMES, 2)}
    moving, still = video.tracks
    assert moving.age == pytest.approx(np.mean([ages[0] for ages in stills.values()]),
                                       abs=1e-3)
    assert still.age == pytest.approx(stills[0][1], abs=1e-3)
    for track in video.tracks:
        assert track.age == pytest.approx(np.mean([age for number, age in ages
                                                   if number == track.number]))
    assert video.detection_seconds > 0 and video.prediction_seconds > 0


@pytest.mark.slow
def test_command_line_predicts_a_photo_beside_a_broken_video(tiny_export, scene_dir, tmp_path):
    """With MTCNN: a video that cannot be opened is one line; the photo beside is predicted
    and the exit status is 0."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "agetf.predict",
                           f"--saved_model={tiny_export.saved_model}", "--detect_faces",
                           "--video_fps=2", str(broken), os.path.join(scene_dir, "still.png")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    blocks = blocks_of(done.stdout)
    assert blocks["broken.mp4"] == [f"Error: cannot open {broken} as a video (not a video "
                                    "OpenCV can read, or damaged); pass a video file or check "
                                    "the camera number"]
    assert "still.png" in blocks
    assert "Videos: 1, unreadable: 1, frames predicted: 0, tracks: 0" in done.stdout
