"""Serialized tf.train.Example records of faces, written without TensorFlow.

The protobuf wire format of tensorflow/core/example/{example,feature}.proto, written directly
so that the converter's worker processes need not import TensorFlow (seconds and hundreds of
MiB each). Example.features = 1; Features.feature = 1, a map whose entries hold key = 1 and
value = 2; Feature.bytes_list = 1, float_list = 2, int64_list = 3; each list's values = 1
(packed for numbers). The fields and their order come from agetf.data.record_fields;
tests/test_record_encoder.py parses the records with tf.io.parse_example.
"""

import functools
import struct

from agetf.data import record_fields

_LIST_NUMBER = {record_fields.BYTES: 1, record_fields.FLOAT: 2, record_fields.INT64: 3}
_SMALL_VARINTS = [bytes((value,)) for value in range(0x80)]


def _varint(value):
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]
    value &= 0xFFFFFFFFFFFFFFFF  # an int64 in two's complement: race -1 takes ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_prefix(field_number, length):
    """What _length_delimited puts before a payload of `length` bytes."""
    return _varint(field_number << 3 | 2) + _varint(length)


def _length_delimited(field_number, payload):
    return _length_prefix(field_number, len(payload)) + payload


def _entry_header(key, kind, length):
    """A `key: Feature` entry of Features.feature up to its list's value bytes, `length` of
    them: the entry is this + those bytes, so a JPEG's need not be copied into it."""
    value = _length_prefix(1, length)  # the list's values
    feature_length = len(value) + length
    feature = _length_prefix(_LIST_NUMBER[kind], feature_length)  # Feature.<kind>_list
    map_value_length = len(feature) + feature_length
    map_value = _length_prefix(2, map_value_length)  # the map entry's value
    key_part = _length_delimited(1, key.encode("utf-8"))  # the map entry's key
    entry_length = len(key_part) + len(map_value) + map_value_length
    return b"".join((_length_prefix(1, entry_length), key_part, map_value, feature, value))


def _feature_entry(key, kind, payload):
    """One `key: Feature` entry of Features.feature; payload is the list's value bytes."""
    return _entry_header(key, kind, len(payload)) + payload


@functools.lru_cache(maxsize=4096)  # genders, races and image sides repeat: build each entry once
def _int_entry(key, value):
    return _feature_entry(key, record_fields.INT64, _varint(int(value)))


@functools.lru_cache(maxsize=256)  # sample weights repeat too
def _float_entry(key, value):
    return _feature_entry(key, record_fields.FLOAT, struct.pack("<f", value))


def feature_entry(name, value):
    """The encoded entry of the field `name` holding `value`.

    Args:
      name: a field of record_fields.FIELDS.
      value: bytes or a str (UTF-8) for a BYTES field, an int for INT64, a float for a
        one-value FLOAT field, a sequence of floats (stored as float32) for a per-age-bin one.

    Returns:
      bytes to concatenate, in record_fields.FIELDS order, into encode_example's features.
    """
    field = record_fields.BY_NAME[name]
    if field.kind == record_fields.INT64:
        return _int_entry(name, int(value))
    if field.kind == record_fields.FLOAT:
        if not field.per_age_bin:
            return _float_entry(name, float(value))
        return _feature_entry(name, field.kind, struct.pack(f"<{len(value)}f", *value))
    return _feature_entry(name, field.kind,
                          value.encode("utf-8") if isinstance(value, str) else value)


def age_key(age=None, age_min=None, age_max=None):
    """The label_entries key of a face's age label: the age (an int) when exact, (min, max)
    for a range, None when unknown. age_min and age_max, when given, win over age."""
    if age_min is None or age_max is None:
        return None if age is None or age < 0 else int(age)
    if age_min < 0 or age_max < 0:
        return None
    return int(age_min) if age_min == age_max else (int(age_min), int(age_max))


def age_values(key):
    """(age, age_min, age_max) stored for an age_key: a range's age is its middle rounded
    down; an unknown age is -1 in all three."""
    if key is None:
        return (record_fields.UNKNOWN,) * 3
    low, high = key if isinstance(key, tuple) else (key, key)
    return (low + high) // 2, low, high


def label_entries(keys, age_deviation):
    """{key: {field: entry}} of the fields computed from the age label
    (record_fields.AGE_FIELDS), built once per distinct label.

    Args:
      keys: age_key()s: exact ages (ints), (min, max) ranges, None for an unknown age.
      age_deviation: sigma in years of the histogram's smoothing.

    Runs in the main process; the workers get the table (encode_example's age_entries).
    """
    from agetf.data import labels  # labels imports TensorFlow, which the workers never import

    table = {}
    for key in set(keys):
        age, age_min, age_max = age_values(key)
        if key is None:
            histogram, age_range = [0.0] * labels.NUM_AGE_BINS, record_fields.UNKNOWN
        else:
            histogram = labels.range_histogram(age_min, age_max, age_deviation).tolist()
            age_range = labels.age_range(age)
        values = {"age": age, "age_min": age_min, "age_max": age_max,
                  "age_histogram": histogram, "age_range": age_range}
        table[key] = {name: feature_entry(name, values[name])
                      for name in record_fields.AGE_FIELDS}
    return table


def encode_example(*, jpeg, age_entries, weight=1.0, **values):
    """The serialized tf.train.Example of one face.

    Args:
      jpeg: the encoded RGB JPEG, stored as the `image` field.
      age_entries: label_entries()[age_key], the age label's own fields.
      weight: the face's sample weight.
      **values: every other field by name: gender (-1 unknown), race, filename, height, width.

    Returns:
      The record's bytes, its fields in record_fields.FIELDS order.
    """
    return b"".join(encode_example_pieces(jpeg=jpeg, age_entries=age_entries, weight=weight,
                                          **values))


def encode_example_pieces(*, jpeg, age_entries, weight=1.0, **values):
    """encode_example's bytes as (head, jpeg, tail), to be joined once (with the TFRecord
    framing, agetf.data.shard_writer.frame_record): the JPEG, most of a record, is not
    copied on the way. The image is the first field; the tail holds the others."""
    values["weight"] = weight
    tail = b"".join(age_entries[field.name] if field.name in record_fields.AGE_FIELDS
                    else feature_entry(field.name, values[field.name])
                    for field in record_fields.FIELDS[1:])
    image = _entry_header(_IMAGE.name, _IMAGE.kind, len(jpeg))
    return _length_prefix(1, len(image) + len(jpeg) + len(tail)) + image, jpeg, tail


_IMAGE = record_fields.FIELDS[0]
assert _IMAGE.name == "image", "encode_example_pieces puts the image first"
