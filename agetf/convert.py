"""Convert folders of UTKFace-named face crops into sharded TFRecords.

    scripts/make_tfrecords --input_dir ~/data/UTKFace --output_dir tfrecords/utkface
    scripts/make_tfrecords --input_dir ~/data/UTKFace --output_dir tfrecords/utkface_coral --split_file=train=utk_train.csv,test=utk_test.csv
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
from agetf.data import conversion

FLAGS = flags.FLAGS

def define_flags():
    """Defines this entry point's flags; only when run as a program, so that importing
    agetf.convert beside agetf.train does not define --age_deviation twice."""
    flags.DEFINE_multi_string("input_dir", None, "Folder of face crops, searched recursively; repeat for several.")
    flags.DEFINE_string("output_dir", None, "Where the shards, TFDS metadata and conversion_report.json go.")
    flags.DEFINE_string("split_ratios", "0.8,0.1,0.1", "train,validation,test shares; they must sum to 1.")
    flags.DEFINE_integer("min_shards", 4, "Fewest shards per split (never more shards than records).")
    flags.DEFINE_integer("num_shards", None, "Shards per split, overriding the size-based count.")
    flags.DEFINE_integer("shard_mb", conversion.DEFAULT_SHARD_BYTES // 2**20, "Target shard size in MiB.")
    flags.DEFINE_float("age_deviation", 5.0, "Sigma in years of the stored age histogram.")
    flags.DEFINE_string("dataset_name", "faces", "Dataset name in shard file names and TFDS metadata.")
    flags.DEFINE_integer("workers", None, "Processes that check images and build records while this "
                         "one writes the shards; default: every core.")
    flags.DEFINE_boolean("overwrite", False, "Replace the dataset already in --output_dir.")
    flags.DEFINE_boolean("progress", True, "Show progress bars on stderr (on a terminal only).")
    flags.DEFINE_string("split_file", None, "A published split replacing the hash split: a CSV of "
                        "'file name,split' rows (e.g. another conversion's splits.csv), or one CSV "
                        "per split with a 'file' column, train=TRAIN.csv,test=TEST.csv[,validation="
                        "VAL.csv] (e.g. the CORAL split's utk_train.csv, utk_test.csv; without "
                        "validation= it is carved out of train by the hash, at validation/(train+"
                        "validation) of --split_ratios). Unlisted input files are skipped.")
    flags.DEFINE_boolean("write_split_file", False, "Write OUTPUT_DIR/splits.csv (file name, split) "
                         "of every kept file, so others can reproduce the split with --split_file.")
    flags.mark_flags_as_required(["input_dir", "output_dir"])


def build_config():
    """Turns the flags into a ConversionConfig; raises ConversionError for bad values."""
    if FLAGS.shard_mb < 1:
        raise conversion.ConversionError(f"--shard_mb must be >= 1, got {FLAGS.shard_mb}")
    return conversion.ConversionConfig(
        input_dirs=[os.path.expanduser(path) for path in FLAGS.input_dir],
        output_dir=os.path.expanduser(FLAGS.output_dir),
        split_ratios=conversion.parse_split_ratios(FLAGS.split_ratios),
        min_shards=FLAGS.min_shards,
        num_shards=FLAGS.num_shards,
        shard_bytes=FLAGS.shard_mb * 2**20,
        age_deviation=FLAGS.age_deviation,
        dataset_name=FLAGS.dataset_name,
        workers=FLAGS.workers,
        overwrite=FLAGS.overwrite,
        show_progress=FLAGS.progress,
        split_file=FLAGS.split_file or None,  # the converter parses it and expands each path's ~
        write_split_file=FLAGS.write_split_file,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        report = conversion.convert(build_config())
    except UsageError as error:  # conversion.ConversionError and the settings' own
        sys.exit(f"make_tfrecords: error: {error}")
    print(conversion.summarize(report))
    print(f"Wrote {FLAGS.output_dir}; details in {os.path.join(FLAGS.output_dir, conversion.REPORT_FILE)}")
    return 0


def console_main():
    """Console entry point."""
    define_flags()
    flagfiles.exit_on_bad_flagfile(sys.argv, "make_tfrecords", FLAGS)
    app.run(main)


if __name__ == "__main__":
    console_main()
