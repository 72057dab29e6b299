"""Convert folders of UTKFace-named face crops, or any face dataset with a manifest or a
dataset adapter (--labels, --labels_format), into sharded TFRecords.

    scripts/make_tfrecords --input_dir ~/data/UTKFace --output_dir tfrecords/utkface
    scripts/make_tfrecords --input_dir ~/data/faces --labels faces.csv --output_dir tfrecords/faces
    scripts/make_tfrecords --input_dir ~/data/UTKFace --output_dir tfrecords/utkface_coral \
        --split_file=train=utk_train.csv,test=utk_test.csv
    python -m agetf.convert --input_dir DIR [--input_dir DIR2 ...] --output_dir OUT

An existing non-empty --output_dir is refused unless --overwrite is given. The new
dataset is built in OUTPUT/.incomplete and swapped in whole, so --output_dir holds the
previous complete dataset or the new one whenever a conversion stops (kill -9 included);
rerunning the same command with --overwrite redoes an interrupted one from scratch. A
second conversion into the same --output_dir is refused while one runs.
"""

import os
import sys

from absl import app, flags

from agetf import UsageError
from agetf.common import flagfiles
from agetf.data import conversion, conversion_report  # no TensorFlow: workers import this module
from agetf.data.convert_config import (
    LABEL_FORMATS,
    MIB,
    ConvertConfig,
    format_split_ratios,
    parse_split_ratios,
)
from agetf.data.dataset_files import REPORT_FILE

FLAGS = flags.FLAGS


def define_flags():
    """Defines this entry point's flags, each default a ConvertConfig field's; only when run as
    a program, so that importing agetf.convert beside agetf.train does not define
    --age_deviation twice."""
    defaults = ConvertConfig
    flags.DEFINE_multi_string("input_dir", None, "Folder of face crops, searched recursively; "
                              "repeat for several.")
    flags.DEFINE_string("output_dir", None, "Where the shards, TFDS metadata and "
                        "conversion_report.json go.")
    flags.DEFINE_string("split_ratios", format_split_ratios(defaults.split_ratios),
                        "train,validation,test shares; they must sum to 1.")
    flags.DEFINE_integer("min_shards", defaults.min_shards,
                         "Fewest shards per split (never more shards than records).")
    flags.DEFINE_integer("num_shards", defaults.num_shards,
                         "Shards per split, overriding the size-based count.")
    flags.DEFINE_integer("shard_mb", defaults.shard_bytes // MIB, "Target shard size in MiB.")
    flags.DEFINE_float("age_deviation", defaults.age_deviation,
                       "Sigma in years of the stored age histogram.")
    flags.DEFINE_string("dataset_name", defaults.dataset_name,
                        "Dataset name in shard file names and TFDS metadata.")
    flags.DEFINE_integer("workers", defaults.workers, "Processes that check images and build "
                         "records while this one writes the shards; default: every core.")
    flags.DEFINE_boolean("overwrite", defaults.overwrite,
                         "Replace the dataset already in --output_dir.")
    flags.DEFINE_boolean("progress", defaults.show_progress,
                         "Show progress bars on stderr (on a terminal only).")
    flags.DEFINE_string("split_file", defaults.split_file, "A published split replacing the hash "
                        "split: a CSV of 'file name,split' rows (e.g. another conversion's "
                        "splits.csv), or one CSV per split with a 'file' column, "
                        "train=TRAIN.csv,test=TEST.csv[,validation=VAL.csv] (e.g. the CORAL "
                        "split's utk_train.csv, utk_test.csv; without validation= it is carved "
                        "out of train by the hash, at validation/(train+validation) of "
                        "--split_ratios). Unlisted input files are skipped.")
    flags.DEFINE_boolean("write_split_file", defaults.write_split_file, "Write "
                         "OUTPUT_DIR/splits.csv (file name, split) of every kept file, so others "
                         "can reproduce the split with --split_file.")
    flags.DEFINE_string("labels", defaults.labels, "Labels from a manifest instead of file "
                        "names: a .csv (header row) or .jsonl file with columns file (path "
                        "under --input_dir), age (34, 30-39, 70+, '(25, 32)' or empty), gender "
                        "(female/f/1, male/m/0 or empty), and optional race, split, weight; or, "
                        "with --labels_format, that dataset's label file or folder.")
    flags.DEFINE_enum("labels_format", defaults.labels_format, list(LABEL_FORMATS),
                      "Read a downloaded dataset's own label files (docs/converting.md).")
    flags.DEFINE_boolean("apparent_age", defaults.apparent_age, "appa_real: train on the mean "
                         "apparent age instead of the real age.")
    flags.DEFINE_float("min_face_score", defaults.min_face_score, "imdb_wiki: skip faces whose "
                       "detector score is lower.")
    flags.mark_flags_as_required(["input_dir", "output_dir"])


def build_config():
    """Turns the flags into a ConvertConfig; raises ConversionError for bad values."""
    return ConvertConfig(
        input_dirs=[os.path.expanduser(path) for path in FLAGS.input_dir],
        output_dir=os.path.expanduser(FLAGS.output_dir),
        split_ratios=parse_split_ratios(FLAGS.split_ratios),
        min_shards=FLAGS.min_shards,
        num_shards=FLAGS.num_shards,
        shard_bytes=FLAGS.shard_mb * MIB,
        age_deviation=FLAGS.age_deviation,
        dataset_name=FLAGS.dataset_name,
        workers=FLAGS.workers,
        overwrite=FLAGS.overwrite,
        show_progress=FLAGS.progress,
        split_file=FLAGS.split_file or None,  # the converter parses it and expands each path's ~
        write_split_file=FLAGS.write_split_file,
        labels=os.path.expanduser(FLAGS.labels) if FLAGS.labels else None,
        labels_format=FLAGS.labels_format,
        apparent_age=FLAGS.apparent_age,
        min_face_score=FLAGS.min_face_score,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        report = conversion.convert(build_config())
    except UsageError as error:  # ConversionError: a bad setting, input or output folder
        sys.exit(f"make_tfrecords: error: {error}")
    print(conversion_report.summarize(report))
    print(f"Wrote {FLAGS.output_dir}; details in {os.path.join(FLAGS.output_dir, REPORT_FILE)}")
    return 0


def console_main():
    """Console entry point."""
    define_flags()
    flagfiles.exit_on_bad_flagfile(sys.argv, "make_tfrecords", FLAGS)
    app.run(main)


if __name__ == "__main__":
    console_main()
