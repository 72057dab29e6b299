"""Record schema 2: age ranges, unknown ages and genders, sample weights; schema 1 records still
parse as exact ages. The converter's encoder (no TensorFlow) and schema.make_example agree."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from agetf.data import labels, record_encoder, record_fields, schema


def _jpeg():
    out = io.BytesIO()
    Image.new("RGB", (8, 9), (120, 80, 40)).save(out, format="JPEG")
    return out.getvalue()


IMAGE = dict(jpeg=_jpeg(), race=2, filename="a.jpg", height=9, width=8)

# (make_example's age labels, age_key, gender, weight)
LABELS = [
    (dict(age=34), 34, 1, 1.0),
    (dict(age=116), 116, 0, 1.0),  # UTKFace's oldest; the histogram clips at 100
    (dict(age=None, age_min=30, age_max=39), (30, 39), 0, 1.0),
    (dict(age=None, age_min=70, age_max=100), (70, 100), 1, 0.5),  # "70+"
    (dict(age=None), None, 1, 2.0),
    (dict(age=25), 25, None, 1.0),  # unknown gender
    (dict(age=None, age_min=25, age_max=25), 25, 0, 1.0),  # a one-year range is an exact age
]


def _ours(age_labels, key, gender, weight, age_deviation=5.0):
    entries = record_encoder.label_entries([key], age_deviation)
    return record_encoder.encode_example(age_entries=entries[key], weight=weight,
                                         gender=-1 if gender is None else gender, **IMAGE)


def _theirs(age_labels, key, gender, weight, age_deviation=5.0):
    return schema.make_example(gender=gender, weight=weight, age_deviation=age_deviation,
                               **age_labels, **IMAGE)


@pytest.mark.parametrize("age_labels, key, gender, weight", LABELS)
def test_the_encoders_records_equal_make_examples(age_labels, key, gender, weight):
    for deviation in (5.0, 3.5):
        ours = tf.train.Example.FromString(_ours(age_labels, key, gender, weight, deviation))
        theirs = tf.train.Example.FromString(_theirs(age_labels, key, gender, weight, deviation))
        assert ours == theirs


def test_age_key_names_exact_ranged_and_unknown_ages():
    assert record_encoder.age_key(34) == 34
    assert record_encoder.age_key(None) is None and record_encoder.age_key(-1) is None
    assert record_encoder.age_key(34, 30, 39) == (30, 39)  # the range wins
    assert record_encoder.age_key(25, 25, 25) == 25
    assert record_encoder.age_key(-1, -1, -1) is None
    assert record_encoder.age_values((30, 39)) == (34, 30, 39)
    assert record_encoder.age_values((70, 100)) == (85, 70, 100)
    assert record_encoder.age_values(None) == (-1, -1, -1)


def _parsed(records):
    return schema.parse_examples(tf.constant(records))


def test_ranges_unknowns_and_weights_parse_back():
    parsed = _parsed([_ours(*row) for row in LABELS])
    assert set(parsed) == {"image", "age", "age_min", "age_max", "age_histogram", "age_range",
                           "gender", "race", "filename", "weight"}
    expected = [(34, 34, 34, 1), (116, 116, 116, 0), (34, 30, 39, 0), (85, 70, 100, 1),
                (-1, -1, -1, 1), (25, 25, 25, -1), (25, 25, 25, 0)]
    got = list(zip(*(parsed[key].numpy().tolist()
                     for key in ("age", "age_min", "age_max", "gender"))))
    assert got == expected
    np.testing.assert_array_equal(parsed["weight"], [1, 1, 1, 0.5, 2, 1, 1])
    np.testing.assert_array_equal(parsed["age_range"], [6, 16, 6, 16, -1, 5, 5])
    histograms = parsed["age_histogram"].numpy()
    np.testing.assert_array_equal(histograms[2], labels.range_histogram(30, 39))
    np.testing.assert_array_equal(histograms[0], labels.age_histogram(34))
    assert not histograms[4].any()  # an unknown age trains no histogram
    np.testing.assert_allclose(histograms[[0, 1, 2, 3, 5]].sum(axis=1), 1.0, rtol=1e-5)


def _schema_1_record(age, gender=0):
    """A record as the schema 1 converter wrote it: no age_min, age_max or weight."""
    def ints(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[IMAGE["jpeg"]])),
        "age": ints(age), "age_range": ints(int(labels.age_range(age))), "gender": ints(gender),
        "age_histogram": tf.train.Feature(float_list=tf.train.FloatList(
            value=labels.age_histogram(age))),
        "race": ints(2), "filename": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[b"old.jpg"])), "height": ints(9), "width": ints(8)}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_a_schema_1_record_parses_as_an_exact_age_batched_single_and_in_tf_data():
    records = [_schema_1_record(41), _schema_1_record(0, gender=1), _schema_1_record(116)]
    batched = _parsed(records)
    single = [schema.parse_examples(tf.constant(record)) for record in records]
    in_tf_data = list(tf.data.Dataset.from_tensor_slices(records).map(schema.parse_examples))
    in_tf_data_batched = next(iter(tf.data.Dataset.from_tensor_slices(records).batch(3)
                                   .map(schema.parse_examples)))
    for i, age in enumerate((41, 0, 116)):
        for features in (single[i], in_tf_data[i]):
            assert (features["age_min"], features["age_max"], features["weight"]) == (age, age, 1.0)
        for features in (batched, in_tf_data_batched):
            assert features["age_min"][i] == features["age_max"][i] == age
            assert features["weight"][i] == 1.0
    # and a schema 2 record of the same face parses to the same tensors
    ours = _parsed([_ours(dict(age=41), 41, 0, 1.0)])
    for key in ours:
        if key != "filename":
            np.testing.assert_array_equal(ours[key][0], batched[key][0])


def test_the_tfds_description_reads_unknown_labels_and_ranges():
    features = schema.tfds_features()
    for row, (age, age_min, age_max, gender) in zip(
            LABELS[2:6], [(34, 30, 39, 0), (85, 70, 100, 1), (-1, -1, -1, 1), (25, 25, 25, -1)]):
        example = features.deserialize_example(_ours(*row))
        assert (example["age"], example["age_min"], example["age_max"], example["gender"]) == (
            age, age_min, age_max, gender)
        assert example["weight"] == row[3]


def test_the_schema_version_is_2():
    assert record_fields.SCHEMA_VERSION == 2
    assert schema.FEATURE_SPEC["weight"].default_value == 1.0
    assert schema.FEATURE_SPEC["age_min"].default_value == -1


@pytest.mark.parametrize("age_min, age_max", [(30, 39), (0, 2), (70, 100), (25, 32), (98, 100)])
def test_a_range_histogram_is_the_smoothed_mean_of_its_years(age_min, age_max):
    histogram = labels.range_histogram(age_min, age_max, 4.0)
    years = [labels.age_histogram(year, 4.0) for year in range(age_min, age_max + 1)]
    np.testing.assert_allclose(histogram, np.mean(years, axis=0), atol=1e-6)
    assert histogram.dtype == np.float32 and abs(histogram.sum() - 1) < 1e-5
    if 10 <= age_min and age_max <= 90:  # away from the clipped ends: wider than its middle year
        middle = years[len(years) // 2]
        assert np.count_nonzero(histogram > 1e-3) > np.count_nonzero(middle > 1e-3)
        assert abs(np.dot(histogram, np.arange(101)) - (age_min + age_max) / 2) < 0.05


def test_a_one_year_range_is_that_years_histogram_and_bad_ranges_are_refused():
    np.testing.assert_array_equal(labels.range_histogram(40, 40), labels.age_histogram(40))
    with pytest.raises(ValueError, match="0 <= min <= max"):
        labels.range_histogram(40, 30)


def test_range_histogram_tf_matches_numpy_eagerly_and_in_tf_data():
    bounds = [(30, 39), (70, 100), (25, 25), (116, 116), (-1, -1)]
    expected = np.stack([labels.range_histogram(min(low, 100), min(high, 100), 3.0) if low >= 0
                         else np.zeros(labels.NUM_AGE_BINS, np.float32)
                         for low, high in bounds])
    low, high = (tf.constant(values, tf.int64) for values in zip(*bounds))
    np.testing.assert_allclose(labels.range_histogram_tf(low, high, 3.0), expected, atol=1e-6)
    dataset = tf.data.Dataset.from_tensor_slices((low, high)).map(
        lambda a, b: labels.range_histogram_tf(a, b, 3.0))
    np.testing.assert_allclose(np.stack(list(dataset.as_numpy_iterator())), expected, atol=1e-6)
