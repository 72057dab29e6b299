"""The TFRecord schema shared by the converter, the input pipeline and TFDS.

One `tf.train.Example` per face. Keys and types are the design's data contract;
`tfrecords/README.md` documents them for people; agetf.data.dataset_files names the files
that hold them.
"""

import tensorflow as tf

from agetf.data import labels, names

SCHEMA_VERSION = 1


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def make_example(*, jpeg, age, gender, race, filename, height, width,
                 age_deviation=labels.DEFAULT_AGE_DEVIATION):
    """Builds the serialized `tf.train.Example` of one face crop.

    `jpeg` is the encoded RGB JPEG; `filename` the source file's base name.
    """
    histogram = labels.age_histogram(age, age_deviation)
    feature = {
        "image": _bytes(jpeg),
        "age": _int(age),
        "age_histogram": tf.train.Feature(float_list=tf.train.FloatList(value=histogram)),
        "age_range": _int(labels.age_range(age)),
        "gender": _int(gender),
        "race": _int(race),
        "filename": _bytes(filename.encode("utf-8")),
        "height": _int(height),
        "width": _int(width),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


FEATURE_SPEC = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "age": tf.io.FixedLenFeature([], tf.int64),
    "age_histogram": tf.io.FixedLenFeature([labels.NUM_AGE_BINS], tf.float32),
    "age_range": tf.io.FixedLenFeature([], tf.int64),
    "gender": tf.io.FixedLenFeature([], tf.int64),
    "race": tf.io.FixedLenFeature([], tf.int64, default_value=names.UNKNOWN_RACE),
    "filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


def parse_examples(serialized):
    """Parses a batch (or one) serialized Example into a dict of tensors."""
    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, FEATURE_SPEC)
    return tf.io.parse_example(serialized, FEATURE_SPEC)


def tfds_features():
    """The `tfds.features.FeaturesDict` describing a record, for `write_metadata`."""
    import tensorflow_datasets as tfds  # heavy import, only where the metadata is written

    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "age": tfds.features.Scalar(dtype=tf.int64),
        "age_histogram": tfds.features.Tensor(shape=(labels.NUM_AGE_BINS,), dtype=tf.float32),
        "age_range": tfds.features.ClassLabel(names=list(labels.AGE_RANGE_NAMES)),
        "gender": tfds.features.ClassLabel(names=list(labels.GENDER_NAMES)),
        "race": tfds.features.Scalar(dtype=tf.int64),
        "filename": tfds.features.Text(),
        "height": tfds.features.Scalar(dtype=tf.int64),
        "width": tfds.features.Scalar(dtype=tf.int64),
    })
