"""Videos' frames sampled at a rate (agetf.serving.video_frames) and faces followed across
them by box overlap (agetf.serving.face_tracks): no model, no detector."""

import os

import cv2
import numpy as np
import pytest

from agetf.serving import face_tracks, video_frames, video_lines
from agetf.serving.face_detection import Box

import video_scenes


def test_iou_of_boxes():
    a = Box(0, 0, 10, 10)
    assert face_tracks.iou(a, a) == 1
    assert face_tracks.iou(a, Box(5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert face_tracks.iou(a, Box(20, 20, 5, 5)) == 0
    assert face_tracks.iou(Box(0, 0, 0, 0), Box(0, 0, 0, 0)) == 0


def test_two_faces_give_two_tracks_each_following_its_face():
    tracker = face_tracks.FaceTracker()
    for step in range(5):
        moving, still = Box(10 + 8 * step, 0, 64, 64), Box(200, 100, 64, 64)
        # The order of the boxes changes: tracks follow the boxes, not their order.
        boxes = [moving, still] if step % 2 else [still, moving]
        tracks = tracker.update(step * 0.2, boxes)
        for track, box, age in zip(tracks, boxes, (20 + step, 60 - step) if step % 2
                                   else (60 - step, 20 + step)):
            track.add(step * 0.2, box, age=age, female_probability=0.2)
    first, second = tracker.tracks()
    moving_track = first if first.box.left < 200 else second
    assert [first.number, second.number] == [1, 2]
    assert moving_track.frames == 5 and moving_track.age == pytest.approx(22)
    assert (moving_track.first_time, moving_track.last_time) == (0, pytest.approx(0.8))
    still_track = second if moving_track is first else first
    assert still_track.age == pytest.approx(58) and still_track.female_probability == 0.2


def test_a_face_missing_for_max_missed_frames_keeps_its_track_and_one_more_ends_it():
    tracker = face_tracks.FaceTracker(max_missed=2)
    box = Box(0, 0, 50, 50)
    (track,) = tracker.update(0.0, [box])
    tracker.update(0.2, [])
    tracker.update(0.4, [])
    assert tracker.update(0.6, [box]) == [track]  # two missed frames: the same track
    for time_s in (0.8, 1.0, 1.2):
        tracker.update(time_s, [])
    (new,) = tracker.update(1.4, [box])  # three missed: a new track
    assert new is not track and new.number == 2
    assert [t.number for t in tracker.tracks()] == [1, 2]
    assert tracker.ended == [track]


def test_a_face_that_moved_too_far_starts_a_new_track():
    tracker = face_tracks.FaceTracker(min_iou=0.3)
    (first,) = tracker.update(0, [Box(0, 0, 50, 50)])
    (second,) = tracker.update(0.2, [Box(40, 0, 50, 50)])  # IoU 10/90
    assert second is not first


def test_a_track_without_an_age_has_none_and_intervals_are_averaged():
    track = face_tracks.Track(1, 0.0, 0.0, Box(0, 0, 1, 1))
    track.add(0.0, Box(0, 0, 1, 1), age=None, female_probability=0.9, age_low=None)
    assert track.age is None and track.mean("age_low") is None
    track.add(0.2, Box(0, 0, 1, 1), age=30, age_low=25, age_high=36)
    track.add(0.4, Box(0, 0, 1, 1), age=32, age_low=27, age_high=38)
    assert (track.age, track.mean("age_low"), track.mean("age_high")) == (31, 26, 37)
    assert track.female_probability == 0.9 and track.frames == 3


def test_a_track_line_names_its_interval_share_and_leaves_out_what_is_not_predicted():
    track = face_tracks.Track(1, 0.0, 0.0, Box(0, 0, 1, 1))
    track.add(0.0, Box(0, 0, 1, 1), age=30, age_low=25, age_high=36, female_probability=0.8)
    track.add(0.4, Box(0, 0, 1, 1), age=32, age_low=27, age_high=38, female_probability=0.6)
    assert video_lines.track_line(track, 0.9) == (
        "Track 1: 0.0-0.4 s, 2 frames: predicted age 31.0 (90% interval 26.0-37.0), "
        "gender female (p_female=0.70)")
    bare = face_tracks.Track(2, 1.0, 1.0, Box(0, 0, 1, 1))
    bare.add(1.0, Box(0, 0, 1, 1), age=40)
    assert video_lines.track_line(bare).endswith("1.0-1.0 s, 1 frame: predicted age 40.0")


@pytest.fixture(scope="module")
def scene_avi(tmp_path_factory):
    return video_scenes.write_video(tmp_path_factory.mktemp("video") / "scene.avi")


@pytest.mark.parametrize("video_fps, indices", [
    (5, list(range(0, 30, 2))),  # every other frame of the 10 fps video
    (2.5, list(range(0, 30, 4))),
    (3, [0, 3, 7, 10, 13, 17, 20, 23, 27]),  # the frame nearest each 1/3 s, never early
    (50, list(range(30))),  # above the video's rate: every frame
])
def test_frames_are_sampled_at_video_fps(scene_avi, video_fps, indices):
    stream = video_frames.open_frames(scene_avi, video_fps)
    frames = [(frame.index, frame.time_s, frame.image.shape) for frame in stream]
    stream.close()
    assert [index for index, _, _ in frames] == indices
    assert [time_s for _, time_s, _ in frames] == [index / video_scenes.FPS for index in indices]
    assert {shape for _, _, shape in frames} == {(video_scenes.HEIGHT, video_scenes.WIDTH, 3)}
    assert stream.frames_read == video_scenes.FRAMES and stream.truncated is None


def test_frames_are_rgb_as_written(scene_avi):
    stream = video_frames.open_frames(scene_avi, 5)
    first = next(iter(stream)).image
    stream.close()
    expected = video_scenes.scene_frame(0).astype(int)
    assert np.abs(first.astype(int) - expected).mean() < 4  # Motion JPEG's loss only


def test_max_frames_stops_the_stream_without_calling_it_truncated(scene_avi):
    stream = video_frames.open_frames(scene_avi, 5, max_frames=3)
    assert [frame.index for frame in stream] == [0, 2, 4]
    assert stream.truncated is None


@pytest.mark.parametrize("extension, fourcc", [("mp4", "mp4v"), ("mov", "mp4v"),
                                               ("mkv", "MJPG"), ("avi", "XVID")])
def test_every_container_reads_with_its_frame_count(tmp_path, extension, fourcc):
    path = video_scenes.write_video(tmp_path / f"v.{extension}", frames=12, fourcc=fourcc)
    stream = video_frames.open_frames(path, 5)
    assert [frame.index for frame in stream] == [0, 2, 4, 6, 8, 10]
    assert stream.truncated is None


def test_broken_videos_are_one_line_errors(scene_avi, tmp_path):
    paths = video_scenes.broken_videos(str(tmp_path), scene_avi)
    for name in ("random.mp4", "empty.mkv"):
        with pytest.raises(video_frames.VideoReadError, match=r"^cannot open .* as a video"):
            video_frames.open_frames(paths[name])
    stream = video_frames.open_frames(paths["no_frames.avi"])
    with pytest.raises(video_frames.VideoReadError, match=r"holds no frame"):
        list(stream)
    stream = video_frames.open_frames(paths["truncated.avi"], 50)
    read = len(list(stream))
    assert 0 < read < video_scenes.FRAMES
    assert stream.truncated == (f"{paths['truncated.avi']} ended after {read} of the 30 frames "
                                "its header gives (truncated or damaged); the frames read were "
                                "predicted")


def test_a_fifo_or_a_folder_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")
    with pytest.raises(video_frames.VideoReadError, match="not a regular file"):
        video_frames.open_frames(str(tmp_path / "pipe.mp4"))
    with pytest.raises(video_frames.VideoReadError, match="cannot read .*missing.mp4"):
        video_frames.open_frames(str(tmp_path / "missing.mp4"))


def test_frames_over_max_pixels_are_refused(scene_avi):
    with pytest.raises(video_frames.VideoReadError, match=r"320x160 pixels, more than "
                                                          r"--max_pixels=1000"):
        video_frames.open_frames(scene_avi, max_pixels=1000)


def test_a_camera_is_timed_by_the_clock_and_read_by_the_same_path(scene_avi):
    """--camera=N: the capture of a camera, timed by its clock (here one that ticks 0.1 s a
    frame), sampled as a file is."""
    ticks = iter(np.arange(0, 10, 0.1))
    stream = video_frames.FrameStream(cv2.VideoCapture(scene_avi), "camera:0", 5,
                                      max_frames=4, clock=lambda: float(next(ticks)))
    assert [(frame.index, frame.time_s) for frame in stream] == [
        (0, 0.0), (2, 0.2), (4, 0.4), (6, 0.6)]
