"""agetf.predict's library: predict face crops, or the faces in photos, print a line per
face and a summary, and write the --output rows (agetf.serving.prediction_file).

`predict(config, paths)` runs what a PredictConfig asks; `run` (face crops) and
`run_photos` (photos: detect, align, predict) are its two paths. A bad output or
--annotate folder is refused before any model is loaded.
"""

import os
import sys
from typing import Optional, Sequence

import numpy as np

from agetf import UsageError
from agetf.common import progress
from agetf.data.image_files import IMAGE_EXTENSIONS, ImageReadError, ReadLimits, read_photo
from agetf.serving import (
    annotate_folder,
    crop_batches,
    face_detection,
    photo_pipeline,
    prediction_file,
    prediction_lines,
    predictors,
)
from agetf.serving.predict_config import DEFAULT_BATCH_SIZE, PredictConfig, output_format


def predict(config: PredictConfig, paths: Sequence[str], out=sys.stdout) -> dict:
    """Predicts every image under paths as config says: photos (config.photos) or face
    crops. Returns run_photos' counts or run's summary; both count `images` and `errors`."""
    if config.photos:
        return run_photos(config, paths, out)
    return run(config, paths, out)


def find_images(paths: Sequence[str]) -> list:
    """Files as given, plus the images under each folder (sorted); a missing path raises.

    What is not a regular file (a FIFO, a device) is listed too: reading it is refused
    with an error line for that path (image_files.open_image_file).
    """
    found = []
    for path in paths:
        if os.path.isdir(path):
            found.extend(_walk_images(path))
        elif os.path.exists(path):
            found.append(path)
        else:
            raise UsageError(f"{path} does not exist; pass image files or folders of images")
    return found


def _walk_images(folder):
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for file_name in sorted(files):
            if file_name.lower().endswith(IMAGE_EXTENSIONS):
                yield os.path.join(root, file_name)


def images_to_predict(paths, output=None):
    """The images under `paths`; a ValueError when there are none, or when `output` is a
    file that cannot be written (refused before any work)."""
    if output:
        output_format(output)
    images = find_images(paths)
    if not images:
        raise UsageError(f"no .jpg/.jpeg/.png images in {', '.join(paths)}; pass image files "
                         "or folders that hold them")
    if output:
        prediction_file.check_output(output, images)
    return images


def run(config: PredictConfig, paths: Sequence[str], out=sys.stdout,
        show_progress: Optional[bool] = None) -> dict:
    """Predicts and prints every image under paths as a face crop, and with config.output
    writes their rows there; returns the summary. A bad output is refused before any work."""
    images = images_to_predict(paths, config.output)
    return predict_and_print(predictors.load_predictor(config.model_path), images,
                             config.batch_size, out, limits=config.limits, output=config.output,
                             show_progress=show_progress)


def predict_and_print(predictor, images: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
                      out=sys.stdout, read_threads: int = crop_batches.READ_THREADS,
                      limits: Optional[ReadLimits] = None, output: Optional[str] = None,
                      show_progress: Optional[bool] = None, warnings=None) -> dict:
    """Predicts images (file paths) in order, printing each one's lines as soon as its batch
    is done, then the summary; with output, writes one row per image there at the end.
    Returns the summary. A progress bar goes to stderr when show_progress, or (None) when
    stderr is a terminal. The first image that looks like a photo rather than a face crop
    gets one warning line on `warnings` (default stderr)."""
    predictions, warned = [], False
    with progress.progress_bar(len(images), "predicting", "image", show_progress) as bar:
        for prediction in crop_batches.predict_files(predictor, images, batch_size,
                                                     read_threads, limits):
            predictions.append(prediction)
            prediction_lines.print_lines(prediction_lines.format_prediction(prediction), out,
                                         bar)
            why = crop_batches.not_like_a_crop(prediction)
            if why and not warned:  # after the image's lines, so it reads as about that image
                warned = True
                prediction_lines.print_lines([prediction_lines.crop_warning(
                    prediction.path, prediction.image_size, why)], warnings or sys.stderr, bar)
            bar.update(1)
    summary = prediction_lines.summarize(predictions)
    print("\n".join(prediction_lines.format_summary(summary)), file=out)
    if output:
        prediction_file.write_rows(output, (row for prediction in predictions
                                            for row in prediction_file.prediction_rows(prediction)))
    return summary


def run_photos(config: PredictConfig, paths: Sequence[str], out=sys.stdout,
               show_progress: Optional[bool] = None) -> dict:
    """Detects, predicts and prints every face in every photo; returns counts, and the
    median milliseconds per readable photo of detection and of alignment. With
    config.annotate, each readable photo is drawn there (as decoded) under its file name;
    with config.output, every face's row is written there at the end. An annotate folder
    where that could write over an input, or a bad output, is refused before anything is
    loaded. A progress bar goes to stderr when show_progress, or (None) when stderr is a
    terminal."""
    images = images_to_predict(paths, config.output)
    drawn = None
    if config.annotate:
        drawn = annotate_folder.annotation_paths(config.annotate, images)
        annotate_folder.check_annotate_dir(config.annotate, paths, images, drawn)
    detector = face_detection.load_detector(config.min_confidence, config.min_face,
                                            config.max_detection_pixels)
    predictor = predictors.load_image_predictor(config.model_path)
    if config.annotate:
        os.makedirs(config.annotate, exist_ok=True)
    photos = _predict_photos(config, images, predictor, detector, drawn, out, show_progress)
    counts = {"images": len(images), "errors": sum(p.error is not None for p in photos),
              "faces": sum(len(p.faces) for p in photos),
              "without_face": sum(p.error is None and not p.faces for p in photos)}
    timed = [p for p in photos if p.detection_seconds is not None]
    if timed:
        counts["detection_ms"] = 1000 * float(np.median([p.detection_seconds for p in timed]))
        counts["alignment_ms"] = 1000 * float(np.median([p.alignment_seconds for p in timed]))
    print("\n".join(prediction_lines.format_photo_summary(counts, len(timed))), file=out)
    if config.output:
        prediction_file.write_rows(config.output, (row for photo in photos
                                                   for row in prediction_file.photo_rows(photo)))
    return counts


def _predict_photos(config, images, predictor, detector, drawn, out, show_progress):
    """Each photo's PhotoPrediction, its lines printed and (with `drawn`, the annotation
    paths) its drawing written as soon as it is done."""
    photos = []
    with progress.progress_bar(len(images), "predicting", "photo", show_progress) as bar:
        for index, path in enumerate(images):
            try:
                image, scale = read_photo(path, config.limits)
                photo = photo_pipeline.predict_photo(predictor, path, image, detector,
                                                     config.refine_alignment)
                photo.scale = scale
            except ImageReadError as error:
                image, photo = None, photo_pipeline.PhotoPrediction(path=path, error=str(error))
            prediction_lines.print_lines(prediction_lines.format_photo(photo), out, bar)
            if drawn and image is not None:
                face_detection.annotate(image, [f.face for f in photo.faces],
                                        [prediction_lines.face_caption(f) for f in photo.faces]
                                        ).save(drawn[index])
            del image  # before the next photo is decoded
            photos.append(photo)
            bar.update(1)
    return photos
