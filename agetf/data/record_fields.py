"""The fields of one face record: the schema's names, kinds and defaults, written once.

The converter's encoder (agetf.data.record_encoder) writes records from this table and the
input pipeline's parser (agetf.data.schema.FEATURE_SPEC) reads them with it; docs/converting.md
describes it for people. Plain Python, so that the converter's worker processes import it
without TensorFlow.
"""

import dataclasses

from agetf.data import names

SCHEMA_VERSION = 1  # in every conversion_report.json; raise it when a field changes

BYTES, FLOAT, INT64 = "bytes", "float", "int64"  # tf.train.Feature's three list kinds


@dataclasses.dataclass(frozen=True)
class Field:
    """One feature of a record's tf.train.Example.

    Attributes:
      name: the feature's key.
      kind: BYTES, FLOAT or INT64.
      per_age_bin: a vector of labels.NUM_AGE_BINS values; else one value.
      default: what the parser gives a record without it; None: the record must have it.
      parsed: whether the input pipeline reads it (height and width are for the report).
    """

    name: str
    kind: str
    per_age_bin: bool = False
    default: object = None
    parsed: bool = True


# In the order the encoder writes them.
FIELDS = (
    Field("image", BYTES),  # encoded RGB JPEG
    Field("age", INT64),  # years, 0-116
    Field("age_histogram", FLOAT, per_age_bin=True),
    Field("age_range", INT64),
    Field("gender", INT64),
    Field("race", INT64, default=names.UNKNOWN_RACE),
    Field("filename", BYTES, default=""),  # the source file's base name, UTF-8
    Field("height", INT64, parsed=False),
    Field("width", INT64, parsed=False),
)
BY_NAME = {field.name: field for field in FIELDS}
AGE_FIELDS = ("age", "age_histogram", "age_range")  # the fields computed from the age alone
