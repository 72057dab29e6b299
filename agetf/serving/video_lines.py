"""What agetf.predict prints for a video: one line per track (when it was seen, its smoothed
age with its interval where the model gives one, its gender), and the videos' summary."""

from agetf.common.head_names import DEFAULT_INTERVAL
from agetf.evaluation import prediction_text


def format_video(video, interval=DEFAULT_INTERVAL) -> list:
    """The lines printed for one video (a video_pipeline.VideoPrediction); `interval`: the
    share the tracks' age intervals hold, as the predictor gives them."""
    lines = [f"Predicting for video {video.name}"]
    if video.error:
        return lines + [f"Error: {video.error}"]
    lines += [track_line(track, interval) for track in video.tracks]
    if not video.tracks:
        lines.append(f"No face found in {video.frames} frames")
    if video.truncated:
        lines.append(f"Error: {video.truncated}")
    return lines


def track_line(track, interval=DEFAULT_INTERVAL) -> str:
    """`Track 1: 0.0-3.8 s, 19 frames: predicted age 34.2 (80% interval 28.1-41.0), gender
    female (p_female=0.83)`, each part where the model predicts it."""
    parts = []
    if track.age is not None:
        age = f"predicted age {track.age:.1f}"
        low, high = track.mean("age_low"), track.mean("age_high")
        if low is not None and high is not None:
            age += f" ({prediction_text.interval_name(interval)} {low:.1f}-{high:.1f})"
        parts.append(age)
    if track.female_probability is not None:
        parts.append(f"gender {prediction_text.gender_name(track.female_probability)} "
                     f"(p_female={track.female_probability:.2f})")
    return (f"Track {track.number}: {track.first_time:.1f}-{track.last_time:.1f} s, "
            f"{track.frames} frame{'' if track.frames == 1 else 's'}: " + ", ".join(parts))


def format_video_summary(videos) -> list:
    """The videos' summary: counts, and the frames per second of each stage over them."""
    frames = sum(video.frames for video in videos)
    lines = [f"Videos: {len(videos)}, unreadable: {sum(v.error is not None for v in videos)}, "
             f"frames predicted: {frames}, tracks: {sum(len(v.tracks) for v in videos)}"]
    seconds = sum(video.seconds for video in videos)
    if frames and seconds > 0:
        stages = [(name, sum(getattr(video, f"{name}_seconds") for video in videos))
                  for name in ("detection", "alignment", "prediction")]
        lines.append(f"Frames per second: {frames / seconds:.1f} overall; "
                     + ", ".join(f"{name} {frames / time:.1f}" for name, time in stages
                                 if time > 0))
    return lines
