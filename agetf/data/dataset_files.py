"""The files of a converted dataset, by name: its splits, its shards and the conversion report.

The converter writes them, and the input pipeline, the record audit, the tests and the
scripts find them, all by these names. Shards follow TFDS's naming
(`NAME-SPLIT.tfrecord-00000-of-00004`), so `tfds.builder_from_directory` loads the folder.
Plain Python, so that the converter's worker processes can import it without TensorFlow.
"""

import re

SPLITS = ("train", "validation", "test")
REPORT_FILE = "conversion_report.json"  # written by agetf.data.conversion, read back here
# A complete shard's name ends like this; a name with anything after it (a temporary file)
# does not. The groups: its split, its index and the shard count of its split.
SHARD_FILE = re.compile(rf"-(?P<split>{'|'.join(SPLITS)})\.tfrecord-(?P<index>\d{{5,}})"
                        rf"-of-(?P<count>\d{{5,}})$")


def shard_name(dataset_name, split, index, num_shards):
    """File name of one shard, in the TFDS naming convention."""
    return f"{dataset_name}-{split}.tfrecord-{index:05d}-of-{num_shards:05d}"


def shard_pattern(data_dir, split):
    """Glob pattern matching every shard of a split in `data_dir`."""
    return f"{data_dir}/*-{split}.tfrecord-*-of-*"
