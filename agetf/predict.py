r"""Predicts age (and range, gender) for face images with an exported SavedModel or TFLite model.

    python -m agetf.predict --saved_model runs/demo/saved_model photo1.jpg faces/
    python -m agetf.predict --tflite runs/demo/tflite/model_float32.tflite faces/
    python -m agetf.predict --saved_model runs/demo/saved_model --detect_faces \
        --annotate annotated/ holiday.jpg

Without --detect_faces every image is taken to be a face crop, framed like the training
crops. With it (or --annotate, which implies it) each image is an ordinary photo: faces
are found with MTCNN (agetf.serving.face_detection), each is warped by its five landmarks into a
crop framed like the training crops (agetf.serving.face_alignment), and predicted one line per
face; the summary gives the time per photo of detection and of alignment. Detection is
never switched on by the image's shape: square photos are common, and a crop the
detector misses would silently vanish.

Arguments after the flags are images or folders (walked for .jpg/.jpeg/.png). For each
image it prints the older project's lines (`Predicting for image X`, `Predicted age: A,
true age: T`, ...), with true labels read from UTKFace-style file names, then a summary
(MAE, CS@5, accuracies) over the images whose names carry labels. --output FILE.csv or
FILE.jsonl also writes one row per face (agetf.serving.prediction_file), and on a terminal a
progress bar on stderr counts the images done.

Hostile input costs one error line for that path, and the rest is predicted: only regular
files are read (a FIFO or /dev/zero is not), none over --max_file_mb, and none decoded to
more than --max_pixels (checked from the header; a larger JPEG decodes at 1/2, 1/4 or 1/8
scale), so one input stays under 2 GB of memory. A model that is not an agetf export, or
an --annotate folder where an original could be written over, is refused in one line.
"""

import collections
import concurrent.futures
import dataclasses
import itertools
import os
import sys
from typing import Iterable, Iterator, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before agetf.data.labels imports TensorFlow

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from agetf import UsageError
from agetf.data import labels  # noqa: E402
from agetf.evaluation import face_format
from agetf.modeling import heads
from agetf.common import progress  # noqa: E402
from agetf.data import names
# The reading of image files is agetf.data.image_files'; its names stay reachable as
# agetf.predict's (ImageReadError, ReadLimits, read_jpeg...) for callers of this module.
from agetf.data.image_files import (DEFAULT_MAX_FILE_MB, DEFAULT_MAX_PIXELS,  # noqa: F401
                                    IMAGE_EXTENSIONS, ImageReadError, ReadLimits, read_jpeg,
                                    read_photo, rgb_jpeg)
from agetf.serving import prediction_file

DEFAULT_BATCH_SIZE = 32
# Threads that read the next batches' files while the model runs on the current one (each
# reads a whole batch, so this many batches are read ahead). None by default: reading a
# crop (its bytes and JPEG header) is ~1-2% of a model call, and on a 2-core CPU threads
# competing with TensorFlow's made a small model ~10% slower and a larger one no faster
# (scripts/benchmark_predict); they pay off where files are slow to read (network storage).
READ_THREADS = 0
# The export's signatures and their inputs (agetf.serving.export's names; importing it would
# import Keras), and the outputs at least one of which a model must give.
BYTES_SIGNATURE, BYTES_INPUT = "serving_default", "images_bytes"
IMAGES_SIGNATURE, IMAGES_INPUT = "serving_images", "images"
_EXPORT_INPUTS = {BYTES_SIGNATURE: (BYTES_INPUT, "string", [None]),
                  IMAGES_SIGNATURE: (IMAGES_INPUT, "uint8", [None, None, None, 3])}
PREDICTED_OUTPUTS = ("age", "female_probability")
EXPORT_COMMAND = "python -m agetf.train --load --model_dir=RUN --export_dir=DIR"
# How much of a foreign SavedModel an error describes (it stays one readable line).
_SIGNATURES_DESCRIBED, _NAMES_DESCRIBED = 4, 3
class SavedModelError(UsageError):
    """The --saved_model directory is not a usable agetf export."""


@dataclasses.dataclass
class Prediction:
    """One image's prediction, its labels where the file name carries them, or an error."""

    path: str
    age: Optional[float] = None
    age_range: Optional[int] = None
    female_probability: Optional[float] = None
    true_age: Optional[int] = None
    true_gender: Optional[int] = None
    error: Optional[str] = None


def load_predictor(saved_model_dir: str):
    """Loads the export's serving_default signature (JPEG bytes in, named outputs out).

    A .tflite file is loaded as a TFLiteModel, which takes the same inputs. Anything else
    than an agetf export raises SavedModelError (or TFLiteModelError) in one line.
    """
    if saved_model_dir.endswith(".tflite"):
        return load_tflite(saved_model_dir)
    return load_signature(saved_model_dir, BYTES_SIGNATURE)


def load_signature(saved_model_dir: str, name: str):
    """The SavedModel's signature `name` (BYTES_SIGNATURE or IMAGES_SIGNATURE), checked to
    take the export's input and give age or female_probability; SavedModelError otherwise."""
    import tensorflow as tf

    from agetf.serving import export

    # A TF Serving model base (MODEL/1/, MODEL/2/...) serves its highest version; so do we.
    saved_model_dir = export.resolve_saved_model_dir(saved_model_dir)
    if not tf.saved_model.contains_saved_model(saved_model_dir):
        raise SavedModelError(f"{saved_model_dir} is not a SavedModel; pass the saved_model "
                              "folder of a training run (model_dir/saved_model)")
    try:
        signatures = tf.saved_model.load(saved_model_dir).signatures
    except Exception as error:  # damaged or from an incompatible TensorFlow: many types
        lines = str(error).strip().splitlines()
        reason = lines[0][:200] if lines else type(error).__name__
        raise SavedModelError(f"{saved_model_dir} cannot be loaded ({reason}); export it again "
                              f"with {EXPORT_COMMAND}") from None
    if not _is_export_signature(signatures.get(name), name):
        input_name, dtype, shape = _EXPORT_INPUTS[name]
        has = ", ".join(_describe_signature(key, signatures[key])
                        for key in sorted(signatures)[:_SIGNATURES_DESCRIBED])
        if len(signatures) > _SIGNATURES_DESCRIBED:
            has += f", and {len(signatures) - _SIGNATURES_DESCRIBED} more"
        raise SavedModelError(
            f"{saved_model_dir} is not an agetf export: it has signatures [{has}] without "
            f"'{name}' taking {input_name} ({dtype} {shape}) and giving "
            f"{' or '.join(PREDICTED_OUTPUTS)}; export one with {EXPORT_COMMAND}")
    return signatures[name]


def _is_export_signature(function, name):
    import tensorflow as tf

    if function is None:
        return False
    input_name, dtype, shape = _EXPORT_INPUTS[name]
    inputs = function.structured_input_signature[1]
    spec = inputs.get(input_name)
    return (set(inputs) == {input_name} and isinstance(spec, tf.TensorSpec)
            and spec.dtype.name == dtype and spec.shape.rank == len(shape)
            and isinstance(function.structured_outputs, dict)
            and bool(set(function.structured_outputs) & set(PREDICTED_OUTPUTS)))


def _describe_signature(name, function):
    """`name taking x (float32 [None, 4]) giving y`: what a foreign signature is."""
    import tensorflow as tf

    def described(key, spec):
        if isinstance(spec, tf.TensorSpec):
            shape = spec.shape.as_list() if spec.shape.rank is not None else "[?]"
            return f"{key} ({spec.dtype.name} {shape})"
        return str(key)

    inputs = sorted(function.structured_input_signature[1].items())
    taking = ", ".join(described(key, spec) for key, spec in inputs[:_NAMES_DESCRIBED])
    outputs = function.structured_outputs
    outputs = sorted(outputs) if isinstance(outputs, dict) else [type(outputs).__name__]
    giving = ", ".join(map(str, outputs[:_NAMES_DESCRIBED]))
    more_in = ", ..." if len(inputs) > _NAMES_DESCRIBED else ""
    more_out = ", ..." if len(outputs) > _NAMES_DESCRIBED else ""
    return f"{name} taking {taking or 'nothing'}{more_in} giving {giving or 'nothing'}{more_out}"


def load_tflite(path: str):
    """A TFLiteModel of an agetf TFLite export; TFLiteModelError in one line otherwise."""
    from agetf.serving import tflite_export

    model = tflite_export.TFLiteModel(path)  # checks the input itself
    outputs = sorted(model.runner.get_output_details())
    if not set(outputs) & set(PREDICTED_OUTPUTS):
        raise tflite_export.TFLiteModelError(
            f"{path} is not an agetf TFLite model: it gives {', '.join(outputs) or 'nothing'}, "
            f"not {' or '.join(PREDICTED_OUTPUTS)}; export one with python -m agetf.train "
            "--load --export_tflite")
    return model


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


def true_labels(path: str):
    """(age, gender) from a UTKFace-style file name, or (None, None)."""
    try:
        face = names.parse_face_name(path)
    except names.UnparseableName:
        return None, None
    return face.age, face.gender


def predict_files(predictor, paths: Iterable[str], batch_size: int = DEFAULT_BATCH_SIZE,
                  read_threads: int = READ_THREADS,
                  limits: Optional[ReadLimits] = None) -> Iterator[Prediction]:
    """Predicts every path in order, batch_size images per call; unreadable files get an error.

    predictor: serving_default, or anything that takes images_bytes, decodes them and raises
    tf.errors.InvalidArgumentError on bytes it cannot decode (an RGB JPEG is checked only so).
    read_threads threads read the next batches' files while the model runs on the current
    batch; 0 reads each batch just before its call. The batches, and so the predictions and
    their order, are the same either way. A file over limits (default ReadLimits()) gets
    an error without being read whole or decoded.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}; pass --batch_size=32")
    if read_threads < 0:
        raise UsageError(f"read_threads must be >= 0, got {read_threads}")
    paths, limits = iter(paths), limits or ReadLimits()
    batches = iter(lambda: list(itertools.islice(paths, batch_size)), [])
    if read_threads == 0:
        for batch in batches:
            yield from _call_batch(predictor, *_read_batch(batch, limits))
        return
    with concurrent.futures.ThreadPoolExecutor(read_threads,
                                               thread_name_prefix="agetf-read") as pool:
        reading = collections.deque()
        for batch in batches:
            reading.append(pool.submit(_read_batch, batch, limits))
            if len(reading) > read_threads:
                yield from _call_batch(predictor, *reading.popleft().result())
        while reading:
            yield from _call_batch(predictor, *reading.popleft().result())


def _read_batch(paths, limits):
    """(a Prediction per path with its labels or read error, the readable files' JPEG bytes).

    RGB JPEGs are not decoded here: the model's decode is the check (see _fill).
    """
    predictions, jpegs = [], []
    for path in paths:
        true_age, true_gender = true_labels(path)
        prediction = Prediction(path=path, true_age=true_age, true_gender=true_gender)
        try:
            jpegs.append(read_jpeg(path, check=False, limits=limits))
        except ImageReadError as error:
            prediction.error = str(error)
        predictions.append(prediction)
    return predictions, jpegs


def _call_batch(predictor, predictions, jpegs):
    """Runs the model once on the batch's readable images and fills in their predictions."""
    import tensorflow as tf

    readable = [p for p in predictions if p.error is None]
    if readable:
        try:
            outputs = _run(predictor, jpegs)
        except tf.errors.InvalidArgumentError:
            # A file TensorFlow's decoder rejects (truncated, corrupt): find it one by one.
            outputs = None
        for index, prediction in enumerate(readable):
            _fill(prediction, outputs, index, predictor, jpegs[index])
    return predictions


def _run(predictor, jpegs):
    import tensorflow as tf

    outputs = predictor(images_bytes=tf.constant(jpegs, dtype=tf.string))
    return {name: value.numpy() for name, value in outputs.items()}


def _fill(prediction, outputs, index, predictor, jpeg):
    import tensorflow as tf

    if outputs is None:
        try:
            outputs, index = _run(predictor, [jpeg]), 0
        except tf.errors.InvalidArgumentError as error:
            try:  # Pillow's reason, as when every file was decoded before its batch
                rgb_jpeg(prediction.path, jpeg)
            except ImageReadError as reason:
                prediction.error = str(reason)
                return
            prediction.error = f"cannot decode {prediction.path} ({error.message.splitlines()[0]})"
            return
    if "age" in outputs:  # not from a gender-only model
        prediction.age = float(outputs["age"][index])
    if "age_range" in outputs:
        prediction.age_range = int(outputs["age_range"][index].argmax())
    if "female_probability" in outputs:
        prediction.female_probability = float(outputs["female_probability"][index])


def format_prediction(prediction: Prediction) -> list:
    """The lines printed for one image, in the older project's wording."""
    lines = [f"Predicting for image {prediction.path}"]
    if prediction.error:
        return lines + [f"Error: {prediction.error}"]
    return lines + face_format.face_lines(
        prediction.age, prediction.age_range, prediction.female_probability,
        prediction.true_age, prediction.true_gender)


def prediction_rows(prediction: Prediction) -> list:
    """The --output row of one face crop (prediction_file.face_row): face 1, or 0 with the
    error."""
    labelled = dict(true_age=prediction.true_age, true_gender=prediction.true_gender)
    if prediction.error:
        return [prediction_file.face_row(prediction.path, 0, error=prediction.error, **labelled)]
    return [prediction_file.face_row(
        prediction.path, 1, age=prediction.age, age_range=prediction.age_range,
        female_probability=prediction.female_probability, **labelled)]


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
            face_format.predicted_gender(p.female_probability) == p.true_gender
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


def images_to_predict(paths, output=None):
    """The images under `paths`; a ValueError when there are none, or when `output` is a
    file that cannot be written (refused before any work)."""
    if output:
        prediction_file.output_format(output)
    images = find_images(paths)
    if not images:
        raise UsageError(f"no .jpg/.jpeg/.png images in {', '.join(paths)}; pass image files "
                         "or folders that hold them")
    if output:
        prediction_file.check_output(output, images)
    return images


def run(saved_model_dir: str, paths: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
        out=sys.stdout, limits: Optional[ReadLimits] = None, output: Optional[str] = None,
        show_progress: Optional[bool] = None) -> dict:
    """Predicts and prints every image under paths, and with output writes their rows there
    (agetf.serving.prediction_file); returns the summary. A bad output is refused before any work."""
    images = images_to_predict(paths, output)
    return predict_and_print(load_predictor(saved_model_dir), images, batch_size, out,
                             limits=limits, output=output, show_progress=show_progress)


def predict_and_print(predictor, images: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
                      out=sys.stdout, read_threads: int = READ_THREADS,
                      limits: Optional[ReadLimits] = None, output: Optional[str] = None,
                      show_progress: Optional[bool] = None) -> dict:
    """Predicts images (file paths) in order, printing each one's lines as soon as its batch
    is done, then the summary; with output, writes one row per image there at the end.
    Returns the summary. A progress bar goes to stderr when show_progress, or (None) when
    stderr is a terminal."""
    predictions = []
    with progress.progress_bar(len(images), "predicting", "image", show_progress) as bar:
        for prediction in predict_files(predictor, images, batch_size, read_threads, limits):
            predictions.append(prediction)
            print_lines(format_prediction(prediction), out, bar)
            bar.update(1)
    summary = summarize(predictions)
    print("\n".join(format_summary(summary)), file=out)
    if output:
        prediction_file.write_rows(output, (row for prediction in predictions
                                            for row in prediction_rows(prediction)))
    return summary


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


# --- photos from the wild: detect, crop like the training crops, predict each face ----

@dataclasses.dataclass
class FacePrediction:
    """One face found in a photo: the detection, where its crop lies, the prediction."""

    face: object  # face_detection.Face: box, confidence and five landmarks
    matrix: object  # 2x3, photo pixels -> the crop fed to the model (face_alignment.warp)
    age: Optional[float]  # None from a gender-only model
    age_range: Optional[int] = None
    female_probability: Optional[float] = None

    @property
    def box(self):
        return self.face.box


@dataclasses.dataclass
class PhotoPrediction:
    """A photo's faces (empty when none was found), or the error that stopped it, the
    seconds spent finding the faces and warping them into crops, and the photo's pixels per
    pixel of the image they were found in (faces' boxes are in the latter; 2, 4 or 8 where
    a large JPEG was decoded at reduced scale)."""

    path: str
    faces: list = dataclasses.field(default_factory=list)
    error: Optional[str] = None
    detection_seconds: Optional[float] = None
    alignment_seconds: Optional[float] = None
    scale: float = 1.0


def load_image_predictor(model_path: str):
    """A callable taking `images` (uint8, any size) -> named outputs: SavedModel or TFLite."""
    if model_path.endswith(".tflite"):
        return load_tflite(model_path)
    return load_signature(model_path, IMAGES_SIGNATURE)


def face_crops(image, faces, refiner=None):
    """(crops [n, size, size, 3] uint8, their 2x3 matrices): each face warped by its five
    landmarks into a crop framed like the training crops (agetf.serving.face_alignment), and with
    a refiner (a detector's for_aligned_crops()) refined by the landmarks found on it."""
    import numpy as np

    from agetf.serving import face_alignment

    size = face_alignment.CROP_SIZE
    aligned = [face_alignment.align_face(image, face.landmarks, detector=refiner)
               for face in faces]
    crops = np.stack([crop for crop, _ in aligned]) if aligned \
        else np.zeros((0, size, size, 3), np.uint8)
    return crops, [matrix for _, matrix in aligned]


def predict_photo(image_predictor, path: str, image, detector,
                  refine: bool = True) -> PhotoPrediction:
    """Finds the faces in one photo (uint8 RGB) with detector (face_detection.load_detector),
    aligns each into a training-style crop (refined by the landmarks found on that crop
    unless refine is False), and predicts all of them in one call."""
    import time

    import tensorflow as tf

    photo = PhotoPrediction(path=path)
    start = time.perf_counter()
    faces = detector(image)
    photo.detection_seconds = time.perf_counter() - start
    start = time.perf_counter()
    crops, matrices = face_crops(image, faces, detector.for_aligned_crops() if refine else None)
    photo.alignment_seconds = time.perf_counter() - start
    if not faces:
        return photo
    outputs = image_predictor(images=tf.constant(crops))
    outputs = {name: value.numpy() for name, value in outputs.items()}
    for index, (face, matrix) in enumerate(zip(faces, matrices)):
        prediction = FacePrediction(face=face, matrix=matrix, age=(
            float(outputs["age"][index]) if "age" in outputs else None))
        if "age_range" in outputs:
            prediction.age_range = int(outputs["age_range"][index].argmax())
        if "female_probability" in outputs:
            prediction.female_probability = float(outputs["female_probability"][index])
        photo.faces.append(prediction)
    return photo


def face_caption(face: FacePrediction) -> str:
    """Short label for a face: age, and gender where predicted (face_format.face_caption)."""
    return face_format.face_caption(face.age, face.female_probability)


def format_photo(photo: PhotoPrediction) -> list:
    """The lines printed for one photo: one per face, or why there is none."""
    lines = [f"Predicting for image {photo.path}"]
    if photo.error:
        return lines + [f"Error: {photo.error}"]
    if not photo.faces:
        return lines + ["No face found"]
    return lines + [face_format.photo_face_line(number, photo_box(face.box, photo.scale),
                                                face.age, face.age_range,
                                                face.female_probability)
                    for number, face in enumerate(photo.faces, start=1)]


def photo_rows(photo: PhotoPrediction) -> list:
    """The --output rows of one photo (prediction_file.face_row): one per face, with its box
    and landmarks in the photo's pixels, or one with face 0 (and the error) when none."""
    true_age, true_gender = true_labels(photo.path)
    labelled = dict(true_age=true_age, true_gender=true_gender)
    if photo.error or not photo.faces:
        return [prediction_file.face_row(photo.path, 0, error=photo.error, **labelled)]
    return [prediction_file.face_row(
        photo.path, number, age=face.age, age_range=face.age_range,
        female_probability=face.female_probability, box=photo_box(face.box, photo.scale),
        confidence=face.face.confidence, landmarks=face.face.landmarks * photo.scale,
        **labelled) for number, face in enumerate(photo.faces, start=1)]


def photo_box(box, scale: float):
    """A box found in a photo decoded at 1/scale, in the photo's own pixels."""
    from agetf.serving import face_detection

    if scale == 1:
        return box
    return face_detection.Box(*(int(round(value * scale))
                                for value in (box.left, box.top, box.width, box.height)))


def annotation_path(annotate_dir: str, path: str, used: set) -> str:
    """OUT/<file name>, with -2, -3... added when two inputs share a name."""
    stem, extension = os.path.splitext(os.path.basename(path))
    extension = extension if extension.lower() in IMAGE_EXTENSIONS else ".jpg"
    candidate, count = stem + extension, 1
    while candidate in used:
        count += 1
        candidate = f"{stem}-{count}{extension}"
    used.add(candidate)
    return os.path.join(annotate_dir, candidate)


def check_annotate_dir(annotate_dir: str, paths: Sequence[str], images: Sequence[str],
                       outputs: Sequence[str]) -> None:
    """Refuses, in one line (ValueError), an --annotate folder where an original could be
    written over: a folder given as input or one inside it (its annotations would be read
    as inputs next time), the folder of a photo given as input, or one where an output
    already is an input (a link to it)."""
    target = os.path.realpath(annotate_dir)
    for path in paths:
        folder = os.path.realpath(path if os.path.isdir(path)
                                  else os.path.dirname(os.path.abspath(path)))
        if os.path.isdir(path) and os.path.commonpath([target, folder]) == folder:
            where = "the folder" if target == folder else "inside the folder"
            raise UsageError(f"--annotate={annotate_dir} is {where} {path} given as input, "
                             "so the annotated photos would be written over the originals; "
                             "pass a folder outside the inputs")
        if target == folder:
            raise UsageError(f"--annotate={annotate_dir} holds {path}, given as input; pass a "
                             "folder outside the inputs, so that no original is written over")
    inputs = {}
    for image in images:
        inputs.setdefault(_file_identity(image), image)
    inputs.pop(None, None)  # an input gone since it was listed
    for output in outputs:
        original = inputs.get(_file_identity(output))
        if original is not None:
            raise UsageError(f"--annotate={annotate_dir} would write {output}, which is the "
                             f"input {original}, over it; pass a folder outside the inputs")


def _file_identity(path):
    try:
        status = os.stat(path)
    except OSError:  # not there yet (an output), or gone
        return None
    return status.st_dev, status.st_ino


def run_photos(model_path: str, paths: Sequence[str], annotate_dir: Optional[str] = None,
               min_confidence: Optional[float] = None, min_face: Optional[int] = None,
               refine: bool = True, out=sys.stdout, limits: Optional[ReadLimits] = None,
               max_detection_pixels: Optional[int] = None, output: Optional[str] = None,
               show_progress: Optional[bool] = None) -> dict:
    """Detects, predicts and prints every face in every photo; returns counts, and the
    median milliseconds per readable photo of detection and of alignment. With annotate_dir,
    each readable photo is drawn there (as decoded) under its file name; with output, every
    face's row is written there at the end (agetf.serving.prediction_file). An annotate folder where
    that could write over an input, or a bad output, is refused before anything is loaded.
    A progress bar goes to stderr when show_progress, or (None) when stderr is a terminal."""
    import numpy as np

    from agetf.serving import face_detection

    images = images_to_predict(paths, output)
    if annotate_dir:
        used = set()
        outputs = [annotation_path(annotate_dir, path, used) for path in images]
        check_annotate_dir(annotate_dir, paths, images, outputs)
    face_detector = face_detection.load_detector(min_confidence, min_face, max_detection_pixels)
    predictor = load_image_predictor(model_path)
    if annotate_dir:
        os.makedirs(annotate_dir, exist_ok=True)
    counts = {"images": len(images), "errors": 0, "faces": 0, "without_face": 0}
    detection, alignment, rows = [], [], []
    with progress.progress_bar(len(images), "predicting", "photo", show_progress) as bar:
        for index, path in enumerate(images):
            try:
                image, scale = read_photo(path, limits)
                photo = predict_photo(predictor, path, image, face_detector, refine)
                photo.scale = scale
            except ImageReadError as error:
                image, photo = None, PhotoPrediction(path=path, error=str(error))
            print_lines(format_photo(photo), out, bar)
            counts["errors"] += photo.error is not None
            counts["faces"] += len(photo.faces)
            counts["without_face"] += photo.error is None and not photo.faces
            if photo.detection_seconds is not None:
                detection.append(photo.detection_seconds)
                alignment.append(photo.alignment_seconds)
            if output:
                rows += photo_rows(photo)
            if annotate_dir and image is not None:
                face_detection.annotate(image, [f.face for f in photo.faces],
                                        [face_caption(f) for f in photo.faces]
                                        ).save(outputs[index])
            del image  # before the next photo is decoded
            bar.update(1)
    print(f"Images: {counts['images']}, unreadable: {counts['errors']}, faces: {counts['faces']}, "
          f"images without a face: {counts['without_face']}", file=out)
    if detection:
        counts["detection_ms"] = 1000 * float(np.median(detection))
        counts["alignment_ms"] = 1000 * float(np.median(alignment))
        print(f"Time per photo (median of {len(detection)}): face detection "
              f"{counts['detection_ms']:.1f} ms, alignment {counts['alignment_ms']:.2f} ms",
              file=out)
    if output:
        prediction_file.write_rows(output, rows)
    return counts


FLAGS = flags.FLAGS


def define_flags():
    """Defines this entry point's flags; only when run as a program, so that importing
    agetf.predict beside agetf.train (tests, notebooks) does not define --batch_size twice."""
    flags.DEFINE_string("saved_model", None, "Exported SavedModel folder (a run's saved_model/).")
    flags.DEFINE_string("tflite", None, "Predict with this TFLite model instead of --saved_model "
                        "(a run's tflite/model_float32.tflite).")
    flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE, "Images per call of the model.")
    flags.DEFINE_boolean("detect_faces", False, "Treat images as ordinary photos: find the faces, "
                         "align each like the training crops and predict it; default: images "
                         "are face crops.")
    flags.DEFINE_string("annotate", None, "With face detection: write each photo with boxes, "
                        "landmarks and labels into this folder (implies --detect_faces).")
    flags.DEFINE_float("min_confidence", None, "Face detection: smallest MTCNN confidence of a "
                       "face (default agetf.serving.face_detection.DEFAULT_MIN_CONFIDENCE, 0.8).")
    flags.DEFINE_integer("min_face", None, "Face detection: smallest face box side, in pixels "
                         "(default agetf.serving.face_detection.DEFAULT_MIN_FACE, 30).")
    flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS, "Most pixels an image is decoded "
                         "to: a larger JPEG decodes at 1/2, 1/4 or 1/8 scale, any other larger "
                         "image is refused from its header (each costs ~6 bytes per pixel).")
    flags.DEFINE_float("max_file_mb", DEFAULT_MAX_FILE_MB, "Files larger than this (MB) are "
                       "not read.")
    flags.DEFINE_integer("max_detection_pixels", None, "Face detection: most pixels MTCNN is "
                         "given; a larger photo is scaled down for detection (default "
                         "agetf.serving.face_detection.DEFAULT_MAX_PIXELS, 4,000,000; MTCNN takes ~130 "
                         "bytes per pixel).")
    flags.DEFINE_string("output", None, "Also write one row per face to FILE.csv or "
                        "FILE.jsonl (the extension chooses): file, box, landmarks, age, range, "
                        "female probability, true labels from the file name, error; written "
                        "whole at the end (docs/evaluation.md lists the columns).")
    flags.DEFINE_boolean("refine_alignment", True, "Face detection: find each aligned face's "
                         "landmarks again on its crop and align once more (closer to the "
                         "training crops' framing; about 60 ms per face on 2 CPU cores).")


def model_path_from_flags() -> str:
    """--saved_model or --tflite, exactly one of them."""
    if bool(FLAGS.saved_model) == bool(FLAGS.tflite):
        raise UsageError("pass exactly one of --saved_model=DIR and --tflite=FILE")
    if FLAGS.tflite and not FLAGS.tflite.endswith(".tflite"):
        raise UsageError(f"--tflite={FLAGS.tflite} does not end in .tflite; pass a file written "
                         "by agetf.train --export_tflite")
    return FLAGS.saved_model or FLAGS.tflite


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("no images given; pass image files or folders after the flags")
    try:
        if FLAGS.output:
            prediction_file.output_format(FLAGS.output)  # before anything is loaded
        model_path = model_path_from_flags()
        limits = ReadLimits(FLAGS.max_pixels, FLAGS.max_file_mb)
        if FLAGS.detect_faces or FLAGS.annotate:
            counts = run_photos(model_path, argv[1:], FLAGS.annotate, FLAGS.min_confidence,
                                FLAGS.min_face, FLAGS.refine_alignment, limits=limits,
                                max_detection_pixels=FLAGS.max_detection_pixels,
                                output=FLAGS.output)
            return 1 if counts["errors"] == counts["images"] else 0
        summary = run(model_path, argv[1:], FLAGS.batch_size, limits=limits,
                      output=FLAGS.output)
    except UsageError as error:
        sys.exit(f"agetf.predict: error: {error}")
    return 1 if summary["errors"] == summary["images"] else 0


def console_main():
    """Console entry point (agetf-predict), as python -m agetf.predict."""
    from agetf.common import flagfiles

    define_flags()
    flagfiles.exit_on_bad_flagfile(sys.argv, "agetf.predict", FLAGS)  # a stray line is no image path
    app.run(main)


if __name__ == "__main__":
    console_main()
