"""agetf.predict's library: predict face crops, or the faces in photos, print a line per
face and a summary, and write the --output rows (agetf.serving.prediction_file).

`predict(config, paths)` runs what a PredictConfig asks; `run` (face crops) and
`run_photos` (photos and videos: detect, align, predict; agetf.serving.video_pipeline for
videos and the camera) are its two paths. A bad output or --annotate folder is refused
before any model is loaded.
"""

import os
import sys
from typing import Optional, Sequence

import numpy as np

from agetf import UsageError
from agetf.common import progress
from agetf.common.head_names import DEFAULT_INTERVAL
from agetf.data.image_files import IMAGE_EXTENSIONS, ImageReadError, ReadLimits, read_photo
from agetf.serving import (
    annotate_folder,
    crop_batches,
    face_detection,
    photo_pipeline,
    prediction_file,
    prediction_lines,
    predictors,
    video_frames,
    video_lines,
    video_pipeline,
)
from agetf.serving.predict_config import DEFAULT_BATCH_SIZE, PredictConfig, output_format


def predict(config: PredictConfig, paths: Sequence[str], out=sys.stdout) -> dict:
    """Predicts every image under paths as config says: photos (config.photos) or face
    crops. Returns run_photos' counts or run's summary; both count `images` and `errors`."""
    if config.photos:
        return run_photos(config, paths, out)
    videos = [path for path in paths if video_frames.is_video(path)]
    if videos:
        raise UsageError(f"{videos[0]} is a video; pass --detect_faces to find and follow the "
                         "faces in videos")
    return run(config, paths, out)


def find_images(paths: Sequence[str], extensions=IMAGE_EXTENSIONS) -> list:
    """Files as given, plus the files under each folder (sorted) whose names end in one of
    `extensions` (images by default); a missing path raises.

    What is not a regular file (a FIFO, a device) is listed too: reading it is refused
    with an error line for that path (image_files.open_image_file).
    """
    found = []
    for path in paths:
        if os.path.isdir(path):
            found.extend(_walk_images(path, extensions))
        elif os.path.exists(path):
            found.append(path)
        else:
            raise UsageError(f"{path} does not exist; pass image files or folders of images")
    return found


def _walk_images(folder, extensions=IMAGE_EXTENSIONS):
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for file_name in sorted(files):
            if file_name.lower().endswith(extensions):
                yield os.path.join(root, file_name)


def images_to_predict(paths, output=None, extensions=IMAGE_EXTENSIONS, camera=False):
    """The images (files ending in `extensions`) under `paths`; a ValueError when there are
    none (and no camera), or when `output` is a file that cannot be written (refused before
    any work)."""
    if output:
        output_format(output)
    images = find_images(paths, extensions)
    if not images and not camera:
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
    predictor = predictors.with_interval(predictors.load_predictor(config.model_path),
                                         config.interval)
    return predict_and_print(predictor, images, config.batch_size, out, limits=config.limits,
                             output=config.output, show_progress=show_progress,
                             interval=config.interval)


def predict_and_print(predictor, images: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
                      out=sys.stdout, read_threads: int = crop_batches.READ_THREADS,
                      limits: Optional[ReadLimits] = None, output: Optional[str] = None,
                      show_progress: Optional[bool] = None, warnings=None,
                      interval: float = DEFAULT_INTERVAL) -> dict:
    """Predicts images (file paths) in order, printing each one's lines as soon as its batch
    is done, then the summary; with output, writes one row per image there at the end.
    Returns the summary. A progress bar goes to stderr when show_progress, or (None) when
    stderr is a terminal. The first image that looks like a photo rather than a face crop
    gets one warning line on `warnings` (default stderr). `interval`: the share each printed
    age interval holds (as the predictor gives it: predictors.with_interval)."""
    predictions, warned = [], False
    with progress.progress_bar(len(images), "predicting", "image", show_progress) as bar:
        for prediction in crop_batches.predict_files(predictor, images, batch_size,
                                                     read_threads, limits):
            predictions.append(prediction)
            prediction_lines.print_lines(prediction_lines.format_prediction(prediction, interval),
                                         out, bar)
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
    images = images_to_predict(paths, config.output,
                               IMAGE_EXTENSIONS + video_frames.VIDEO_EXTENSIONS,
                               camera=config.camera is not None)
    drawn = None
    if config.annotate:
        drawn = annotate_folder.annotation_paths(
            config.annotate, images + ([] if config.camera is None
                                       else [f"camera{config.camera}.mp4"]))
        annotate_folder.check_annotate_dir(config.annotate, paths, images, drawn)
    detector = face_detection.load_detector(config.min_confidence, config.min_face,
                                            config.max_detection_pixels)
    predictor = predictors.with_interval(predictors.load_image_predictor(config.model_path),
                                         config.interval)
    if config.annotate:
        os.makedirs(config.annotate, exist_ok=True)
    done = _predict_photos(config, images, predictor, detector, drawn, out, show_progress)
    photos = [p for p in done if isinstance(p, photo_pipeline.PhotoPrediction)]
    videos = [v for v in done if isinstance(v, video_pipeline.VideoPrediction)]
    counts = {"images": len(photos), "errors": sum(p.error is not None for p in photos),
              "faces": sum(len(p.faces) for p in photos),
              "without_face": sum(p.error is None and not p.faces for p in photos)}
    timed = [p for p in photos if p.detection_seconds is not None]
    if timed:
        counts["detection_ms"] = 1000 * float(np.median([p.detection_seconds for p in timed]))
        counts["alignment_ms"] = 1000 * float(np.median([p.alignment_seconds for p in timed]))
    if photos or not videos:
        print("\n".join(prediction_lines.format_photo_summary(counts, len(timed))), file=out)
    if videos:
        print("\n".join(video_lines.format_video_summary(videos)), file=out)
        # The exit status counts every input: photos and videos.
        counts.update(images=len(done), errors=counts["errors"] + sum(
            v.error is not None for v in videos), videos=len(videos),
            tracks=sum(len(v.tracks) for v in videos))
    if config.output:
        prediction_file.write_rows(config.output, (
            row for item in done for row in (
                item.rows if isinstance(item, video_pipeline.VideoPrediction)
                else prediction_file.photo_rows(item))))
    return counts


def _predict_photos(config, images, predictor, detector, drawn, out, show_progress):
    """Each photo's PhotoPrediction (each video's VideoPrediction, the camera's last), its
    lines printed and (with `drawn`, the annotation paths) its drawing written as soon as it
    is done."""
    photos = []
    with progress.progress_bar(len(images), "predicting", "photo", show_progress) as bar:
        for index, path in enumerate(images):
            if video_frames.is_video(path):
                photos.append(_predict_video(config, path, predictor, detector,
                                             drawn and drawn[index], out, bar))
                bar.update(1)
                continue
            try:
                image, scale = read_photo(path, config.limits)
                photo = photo_pipeline.predict_photo(predictor, path, image, detector,
                                                     config.refine_alignment)
                photo.scale = scale
            except ImageReadError as error:
                image, photo = None, photo_pipeline.PhotoPrediction(path=path, error=str(error))
            prediction_lines.print_lines(prediction_lines.format_photo(photo, config.interval),
                                         out, bar)
            if drawn and image is not None:
                face_detection.annotate(image, [f.face for f in photo.faces],
                                        [prediction_lines.face_caption(f) for f in photo.faces]
                                        ).save(drawn[index])
            del image  # before the next photo is decoded
            photos.append(photo)
            bar.update(1)
        if config.camera is not None:
            photos.append(_predict_video(config, config.camera, predictor, detector,
                                         drawn and drawn[-1], out, bar))
    return photos


def _predict_video(config, source, predictor, detector, drawn, out, bar):
    """A video file's or the camera's VideoPrediction, its lines printed when it ends; its
    --output rows (config.output only) in its `rows`."""
    rows = []

    def keep_row(frame, number, face, track):
        rows.append(prediction_file.frame_row(name, frame, number, face, track))

    name = video_frames.camera_name(source) if isinstance(source, int) else source
    settings = video_pipeline.VideoSettings(
        video_fps=config.video_fps, max_frames=config.max_frames,
        refine=config.refine_alignment, max_pixels=config.max_pixels)
    video = video_pipeline.predict_video(predictor, source, detector, settings,
                                         keep_row if config.output else None, drawn)
    video.rows = rows + prediction_file.video_rows(video)
    prediction_lines.print_lines(video_lines.format_video(video, config.interval), out, bar)
    return video
