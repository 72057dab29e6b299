"""TensorFlow's views of the record schema (agetf.data.record_fields): the parser's feature
spec, a reference record builder and the TFDS feature description.

One `tf.train.Example` per face. Keys and types are the design's data contract, written
once in agetf.data.record_fields; `docs/converting.md` documents them for people;
agetf.data.dataset_files names the files that hold them.
"""

import tensorflow as tf

from agetf.data import labels, record_fields

_DTYPES = {record_fields.BYTES: tf.string, record_fields.FLOAT: tf.float32,
           record_fields.INT64: tf.int64}


def _feature(field, value):
    if field.kind == record_fields.INT64:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    if field.kind == record_fields.FLOAT:
        return tf.train.Feature(float_list=tf.train.FloatList(value=value))
    value = value.encode("utf-8") if isinstance(value, str) else value
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def make_example(*, jpeg, age, gender, race, filename, height, width,
                 age_deviation=labels.DEFAULT_AGE_DEVIATION):
    """Builds the serialized `tf.train.Example` of one face crop with TensorFlow's protos.

    `jpeg` is the encoded RGB JPEG; `filename` the source file's base name. The converter
    writes the same records without TensorFlow (agetf.data.record_encoder).
    """
    values = {"image": jpeg, "age": age, "age_histogram": labels.age_histogram(age, age_deviation),
              "age_range": labels.age_range(age), "gender": gender, "race": race,
              "filename": filename, "height": height, "width": width}
    feature = {field.name: _feature(field, values[field.name]) for field in record_fields.FIELDS}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


FEATURE_SPEC = {
    field.name: tf.io.FixedLenFeature([labels.NUM_AGE_BINS] if field.per_age_bin else [],
                                      _DTYPES[field.kind], default_value=field.default)
    for field in record_fields.FIELDS if field.parsed
}


def parse_examples(serialized):
    """Parses a batch (or one) serialized Example into a dict of tensors."""
    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, FEATURE_SPEC)
    return tf.io.parse_example(serialized, FEATURE_SPEC)


def tfds_features():
    """The `tfds.features.FeaturesDict` describing a record, for `write_metadata`."""
    import tensorflow_datasets as tfds  # heavy import, only where the metadata is written

    # Fields TFDS shows as more than a number or a tensor; the rest follow their kind.
    special = {
        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
        "age_range": tfds.features.ClassLabel(names=list(labels.AGE_RANGE_NAMES)),
        "gender": tfds.features.ClassLabel(names=list(labels.GENDER_NAMES)),
        "filename": tfds.features.Text(),
    }
    return tfds.features.FeaturesDict({
        field.name: special.get(field.name) or (
            tfds.features.Tensor(shape=(labels.NUM_AGE_BINS,), dtype=_DTYPES[field.kind])
            if field.per_age_bin else tfds.features.Scalar(dtype=_DTYPES[field.kind]))
        for field in record_fields.FIELDS})
