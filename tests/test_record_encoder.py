"""Records written without TensorFlow (agetf.data.record_encoder) read back by TensorFlow's own
parser, field by field, with a spec built from the one schema table (agetf.data.record_fields)."""

import numpy as np
import pytest
import tensorflow as tf

from agetf.data import labels, names, record_encoder, record_fields, schema

FIELDS = dict(jpeg=b"\xff\xd8" + bytes(range(256)) * 3, gender=1, height=200, width=180)
FACES = [(0, names.UNKNOWN_RACE, "0_1_7.jpg"), (37, 2, "37_0_2_20170101000000001.jpg.chip.jpg"),
         (116, 4, "116_1_4_ünïcode.jpg")]


def _encoded(age_deviation=3.5):
    entries = record_encoder.label_entries([age for age, _, _ in FACES], age_deviation)
    return [record_encoder.encode_example(age_entries=entries[age], race=race, filename=name,
                                          **FIELDS) for age, race, name in FACES]


def test_a_batch_parses_with_tf_io_parse_example_into_every_field():
    spec = {field.name: tf.io.FixedLenFeature(
        [labels.NUM_AGE_BINS] if field.per_age_bin else [],
        {"bytes": tf.string, "float": tf.float32, "int64": tf.int64}[field.kind])
        for field in record_fields.FIELDS}  # height and width too, which the pipeline skips
    parsed = tf.io.parse_example(tf.constant(_encoded()), spec)
    assert set(parsed) == {field.name for field in record_fields.FIELDS}
    for i, (age, race, name) in enumerate(FACES):
        assert parsed["image"][i].numpy() == FIELDS["jpeg"]
        assert parsed["age"][i] == age and parsed["race"][i] == race
        assert parsed["age_range"][i] == labels.age_range(age)
        assert parsed["filename"][i].numpy().decode() == name
        assert (parsed["gender"][i], parsed["height"][i], parsed["width"][i]) == (1, 200, 180)
        np.testing.assert_array_equal(parsed["age_histogram"][i], labels.age_histogram(age, 3.5))


def test_the_pipelines_parser_reads_them_like_the_schemas_records():
    ours = schema.parse_examples(tf.constant(_encoded(age_deviation=5.0)))
    theirs = schema.parse_examples(tf.constant([
        schema.make_example(age=age, race=race, filename=name, **FIELDS)
        for age, race, name in FACES]))
    assert set(ours) == set(schema.FEATURE_SPEC) == {
        field.name for field in record_fields.FIELDS if field.parsed}
    for key in ours:
        np.testing.assert_array_equal(ours[key].numpy(), theirs[key].numpy())


def test_a_record_without_a_field_fails_loudly():
    entries = record_encoder.label_entries([30], 5.0)
    with pytest.raises(KeyError, match="race"):
        record_encoder.encode_example(age_entries=entries[30], jpeg=b"x", gender=0,
                                      filename="a.jpg", height=1, width=1)
