"""What agetf.predict prints: each image's lines, in the older project's wording
(agetf.evaluation.prediction_text), and the summary over the images whose names carry labels.
"""

from typing import Optional, Sequence

from agetf.common import progress
from agetf.common.head_names import DEFAULT_INTERVAL
from agetf.data import labels
from agetf.evaluation import prediction_text
from agetf.modeling import heads
from agetf.serving.crop_batches import Prediction
from agetf.serving.photo_pipeline import FacePrediction, PhotoPrediction, photo_box


def format_prediction(prediction: Prediction, interval: float = DEFAULT_INTERVAL) -> list:
    """The lines printed for one face crop (`interval`: the share its age interval holds)."""
    lines = [f"Predicting for image {prediction.path}"]
    if prediction.error:
        return lines + [f"Error: {prediction.error}"]
    return lines + prediction_text.face_lines(
        prediction.age, prediction.age_range, prediction.female_probability,
        prediction.true_age, prediction.true_gender, age_low=prediction.age_low,
        age_high=prediction.age_high, age_std=prediction.age_std, interval=interval)


def format_photo(photo: PhotoPrediction, interval: float = DEFAULT_INTERVAL) -> list:
    """The lines printed for one photo: one per face, or why there is none (`interval`: the
    share each face's age interval holds)."""
    lines = [f"Predicting for image {photo.path}"]
    if photo.error:
        return lines + [f"Error: {photo.error}"]
    if not photo.faces:
        return lines + ["No face found"]
    return lines + [prediction_text.photo_face_line(number, photo_box(face.box, photo.scale),
                                                face.age, face.age_range,
                                                face.female_probability, face.age_low,
                                                face.age_high, interval)
                    for number, face in enumerate(photo.faces, start=1)]


def face_caption(face: FacePrediction) -> str:
    """Short label for a face: age, and gender where predicted (prediction_text.face_caption)."""
    return prediction_text.face_caption(face.age, face.female_probability)


def summarize(predictions: Sequence[Prediction]) -> dict:
    """Metrics over the predictions whose names carry labels: MAE, CS@5, accuracies, counts."""
    done = [p for p in predictions if p.error is None]
    labelled = [p for p in done if p.true_age is not None]
    aged = [p for p in labelled if p.age is not None]
    summary = {"images": len(predictions), "errors": len(predictions) - len(done),
               "labelled": len(labelled)}
    if aged:
        errors = [abs(p.age - p.true_age) for p in aged]
        summary["mae"] = sum(errors) / len(errors)
        summary["cs5"] = sum(e <= heads.CS_THRESHOLD_YEARS for e in errors) / len(errors)
        ranged = [p for p in aged if p.age_range is not None]
        if ranged:
            summary["range_accuracy"] = sum(
                p.age_range == labels.age_range(p.true_age) for p in ranged) / len(ranged)
    gendered = [p for p in done if p.true_gender is not None and p.female_probability is not None]
    if gendered:
        summary["gender_accuracy"] = sum(
            prediction_text.predicted_gender(p.female_probability) == p.true_gender
            for p in gendered) / len(gendered)
    return summary


def format_summary(summary: dict) -> list:
    """Summary lines; metrics appear only where true labels were known."""
    lines = [f"Images: {summary['images']}, unreadable: {summary['errors']}, "
             f"with labels in their names: {summary['labelled']}"]
    if "mae" in summary:
        lines.append(f"Age MAE: {summary['mae']:.2f} years, CS@5: {summary['cs5']:.3f}")
    if "range_accuracy" in summary:
        lines.append(f"Range accuracy: {summary['range_accuracy']:.3f}")
    if "gender_accuracy" in summary:
        lines.append(f"Gender accuracy: {summary['gender_accuracy']:.3f}")
    return lines


def format_photo_summary(counts: dict, timed: int) -> list:
    """The photo pipeline's summary: counts, and the median times over the `timed` photos
    read."""
    lines = [f"Images: {counts['images']}, unreadable: {counts['errors']}, faces: "
             f"{counts['faces']}, images without a face: {counts['without_face']}"]
    if "detection_ms" in counts:
        lines.append(f"Time per photo (median of {timed}): face detection "
                     f"{counts['detection_ms']:.1f} ms, alignment {counts['alignment_ms']:.2f} ms")
    return lines


def crop_warning(path: str, size, why: Optional[str]) -> str:
    """The one line said when an image predicted as a face crop looks like a photo."""
    width, height = size
    return (f"agetf.predict: warning: {path} is {width}x{height} pixels, {why}; it is "
            "predicted as a face crop: pass --detect_faces to find the faces in photos")


def print_lines(lines: Sequence[str], out, bar) -> None:
    """Prints lines beside a progress bar (progress.progress_bar): where both reach the
    terminal, the bar is taken off while they are printed, so that they do not land on its
    line, then drawn again."""
    shared = not bar.disable and progress.on_terminal(out)
    if shared:
        bar.clear()
    print("\n".join(lines), file=out, flush=True)
    if shared:
        bar.refresh()
