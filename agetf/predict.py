r"""Predicts age (and range, gender) for face images with an exported SavedModel or TFLite model.

    python -m agetf.predict --saved_model runs/demo/saved_model faces/
    python -m agetf.predict --tflite runs/demo/tflite/model_float32.tflite faces/
    python -m agetf.predict --saved_model runs/demo/saved_model --detect_faces \
        --annotate annotated/ holiday.jpg
    python -m agetf.predict --saved_model runs/demo/saved_model --detect_faces party.mp4
    python -m agetf.predict --saved_model runs/demo/saved_model --camera=0 --max_frames=100

Without --detect_faces every image is taken to be a face crop, framed like the training
crops (one that looks like a photo gets a warning). With it (or --annotate, which implies
it) each image is an ordinary photo: each face is found, aligned like the training crops
and predicted, one line per face (agetf.serving.photo_pipeline); a video (.mp4 .avi .mov
.mkv .webm) is sampled at --video_fps and its faces followed across frames, one line per
track (agetf.serving.video_pipeline). Detection is never switched on by the image's shape:
square photos are common, and a crop the detector misses would silently vanish.

Arguments after the flags are images or folders (walked for .jpg/.jpeg/.png, and with
--detect_faces for videos too). Each image
gets the older project's lines, with true labels read from UTKFace-style file names, then
a summary; --output FILE.csv or FILE.jsonl also writes one row per face. Hostile input
costs one error line for that path, and the rest is predicted (agetf.data.image_files).
This module only drives: the flags become a PredictConfig (agetf.serving.predict_config),
and agetf.serving.predict_lib does the work.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

from absl import app, flags  # noqa: E402

from agetf import UsageError  # noqa: E402
from agetf.common import flagfiles  # noqa: E402
from agetf.serving.predict_config import PredictConfig  # noqa: E402

FLAGS = flags.FLAGS


def _default(name):
    """The PredictConfig field's default: each flag's default is written there once."""
    return PredictConfig.__dataclass_fields__[name].default


def define_flags():
    """Defines this entry point's flags; only when run as a program, so that importing
    agetf.predict beside agetf.train (tests, notebooks) does not define --batch_size twice."""
    flags.DEFINE_string("saved_model", _default("saved_model"),
                        "Exported SavedModel folder (a run's saved_model/).")
    flags.DEFINE_string("tflite", _default("tflite"), "Predict with this TFLite model instead "
                        "of --saved_model (a run's tflite/model_float32.tflite).")
    flags.DEFINE_integer("batch_size", _default("batch_size"), "Images per call of the model.")
    flags.DEFINE_boolean("detect_faces", _default("detect_faces"), "Treat images as ordinary "
                         "photos: find the faces, align each like the training crops and "
                         "predict it; default: images are face crops.")
    flags.DEFINE_string("annotate", _default("annotate"), "With face detection: write each "
                        "photo with boxes, landmarks and labels into this folder (implies "
                        "--detect_faces).")
    flags.DEFINE_float("min_confidence", _default("min_confidence"), "Face detection: smallest "
                       "MTCNN confidence of a face (default "
                       "agetf.serving.face_detection.DEFAULT_MIN_CONFIDENCE, 0.8).")
    flags.DEFINE_integer("min_face", _default("min_face"), "Face detection: smallest face box "
                         "side, in pixels (default agetf.serving.face_detection.DEFAULT_MIN_FACE, "
                         "30).")
    flags.DEFINE_integer("max_pixels", _default("max_pixels"), "Most pixels an image is "
                         "decoded to: a larger JPEG decodes at 1/2, 1/4 or 1/8 scale, any other "
                         "larger image is refused from its header (each costs ~6 bytes per "
                         "pixel).")
    flags.DEFINE_float("max_file_mb", _default("max_file_mb"), "Files larger than this (MB) are "
                       "not read.")
    flags.DEFINE_integer("max_detection_pixels", _default("max_detection_pixels"), "Face "
                         "detection: most pixels MTCNN is given; a larger photo is scaled down "
                         "for detection (default agetf.serving.face_detection.DEFAULT_MAX_PIXELS, "
                         "4,000,000; MTCNN takes ~130 bytes per pixel).")
    flags.DEFINE_string("output", _default("output"), "Also write one row per face to FILE.csv "
                        "or FILE.jsonl (the extension chooses): file, box, landmarks, age, range, "
                        "female probability, true labels from the file name, error; written "
                        "whole at the end (docs/evaluation.md lists the columns).")
    flags.DEFINE_float("interval", _default("interval"), "The share of each face's age "
                       "distribution its printed age interval (age_low-age_high) holds, "
                       "calibrated at 0.8 on the validation split (docs/evaluation.md).")
    flags.DEFINE_boolean("refine_alignment", _default("refine_alignment"), "Face detection: "
                         "find each aligned face's landmarks again on its crop and align once "
                         "more (closer to the training crops' framing; about 60 ms per face on "
                         "2 CPU cores).")
    flags.DEFINE_float("video_fps", _default("video_fps"), "Videos and the camera: frames "
                       "predicted per second of video (every frame where the video has fewer).")
    flags.DEFINE_integer("max_frames", _default("max_frames"), "Videos and the camera: stop "
                         "each after this many predicted frames (0: no limit).")
    flags.DEFINE_integer("camera", _default("camera"), "Also read camera N (0: the first) until "
                         "Ctrl-C or --max_frames; implies --detect_faces.")


def config_from_flags() -> PredictConfig:
    """The PredictConfig of the parsed flags (checked: UsageError in one line)."""
    return PredictConfig(**{field: getattr(FLAGS, field)
                            for field in PredictConfig.__dataclass_fields__})


def main(argv):
    if len(argv) < 2 and FLAGS.camera is None:
        raise app.UsageError("no images given; pass image or video files or folders after the "
                             "flags, or --camera=N")
    try:
        config = config_from_flags()
        # TensorFlow starts only once the flags are known to be good.
        from agetf.serving import predict_lib

        result = predict_lib.predict(config, argv[1:])
    except UsageError as error:
        sys.exit(f"agetf.predict: error: {error}")
    return 1 if result["errors"] == result["images"] else 0


def console_main():
    """Console entry point (agetf-predict), as python -m agetf.predict."""
    define_flags()
    # A stray line of a flagfile would be taken for an image path.
    flagfiles.exit_on_bad_flagfile(sys.argv, "agetf.predict", FLAGS)
    app.run(main)


if __name__ == "__main__":
    console_main()
