"""TensorFlow's views of the record schema (agetf.data.record_fields): the parser's feature
spec, a reference record builder and the TFDS feature description.

One `tf.train.Example` per face. Keys and types are the design's data contract, written
once in agetf.data.record_fields; `docs/converting.md` documents them for people;
agetf.data.dataset_files names the files that hold them.
"""

import tensorflow as tf

from agetf.data import labels, record_fields
from agetf.data.record_fields import UNKNOWN

_DTYPES = {record_fields.BYTES: tf.string, record_fields.FLOAT: tf.float32,
           record_fields.INT64: tf.int64}


def _feature(field, value):
    if field.kind == record_fields.INT64:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    if field.kind == record_fields.FLOAT:
        values = value if field.per_age_bin else [value]
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    value = value.encode("utf-8") if isinstance(value, str) else value
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _age_label_values(age, age_min, age_max, age_deviation):
    """age, age_min, age_max, age_histogram and age_range of an exact age, a range or None."""
    if age_min is not None and age_max is not None and min(age_min, age_max) >= 0:
        age = (age_min + age_max) // 2
    elif age is None or age < 0:
        return {"age": UNKNOWN, "age_min": UNKNOWN, "age_max": UNKNOWN,
                "age_histogram": [0.0] * labels.NUM_AGE_BINS, "age_range": UNKNOWN}
    else:
        age_min = age_max = age
    return {"age": age, "age_min": age_min, "age_max": age_max,
            "age_histogram": labels.range_histogram(age_min, age_max, age_deviation),
            "age_range": labels.age_range(age)}


def make_example(*, jpeg, age, gender, race, filename, height, width,
                 age_deviation=labels.DEFAULT_AGE_DEVIATION, age_min=None, age_max=None,
                 weight=1.0):
    """Builds the serialized `tf.train.Example` of one face crop with TensorFlow's protos.

    `jpeg` is the encoded RGB JPEG; `filename` the source file's base name. `age` is the
    exact age, or None (or -1) when unknown; `age_min` and `age_max` give an inclusive range
    instead (the stored age is its middle, rounded down). `gender` None (or -1): unknown.
    The converter writes the same records without TensorFlow (agetf.data.record_encoder).
    """
    values = {"image": jpeg, "gender": UNKNOWN if gender is None else gender, "race": race,
              "filename": filename, "weight": weight, "height": height, "width": width,
              **_age_label_values(age, age_min, age_max, age_deviation)}
    feature = {field.name: _feature(field, values[field.name]) for field in record_fields.FIELDS}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


FEATURE_SPEC = {
    field.name: tf.io.FixedLenFeature([labels.NUM_AGE_BINS] if field.per_age_bin else [],
                                      _DTYPES[field.kind], default_value=field.default)
    for field in record_fields.FIELDS if field.parsed
}


def _exact_age_bounds(features):
    """A record without age_min and age_max (schema 1) holds an exact age: copy it into both."""
    age = features["age"]
    for key in ("age_min", "age_max"):
        features[key] = tf.where((age >= 0) & (features[key] < 0), age, features[key])
    return features


def parse_examples(serialized):
    """Parses a batch (or one) serialized Example into a dict of tensors.

    Keys: FEATURE_SPEC's (image, age, age_min, age_max, age_histogram, age_range, gender,
    race, filename, weight). age_min == age_max == age for an exact age, schema 1 records
    included; -1 marks an unknown age, age range or gender.
    """
    if serialized.shape.rank == 0:
        return _exact_age_bounds(tf.io.parse_single_example(serialized, FEATURE_SPEC))
    return _exact_age_bounds(tf.io.parse_example(serialized, FEATURE_SPEC))


def tfds_features():
    """The `tfds.features.FeaturesDict` describing a record, for `write_metadata`."""
    import tensorflow_datasets as tfds  # heavy import, only where the metadata is written

    # Fields TFDS shows as more than a number or a tensor; the rest follow their kind.
    # An unknown gender or age range is -1: ClassLabel allows -1 as "no label" (TFDS's
    # imagenet2012 test split stores it so), so the classes stay named.
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
