"""The fields of one face record: the schema's names, kinds and defaults, written once.

The converter's encoder (agetf.data.record_encoder) writes records from this table and the
input pipeline's parser (agetf.data.schema.FEATURE_SPEC) reads them with it; docs/converting.md
describes it for people. Plain Python, so that the converter's worker processes import it
without TensorFlow.
"""

import dataclasses

from agetf.data import names

# In every conversion_report.json; raise it when a field changes. 1: exact ages and genders
# only; 2: adds age_min, age_max (an age range) and weight, and -1 for an unknown age or gender.
SCHEMA_VERSION = 2
UNKNOWN = -1  # an unknown age, age range, gender or race

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
    Field("age", INT64),  # years, 0-116; a range's middle, (min + max) // 2; -1 unknown
    # An inclusive range of years; an exact age has age_min == age_max == age. Schema 1
    # records lack them: the parser reads the default -1, then schema.parse_examples copies
    # the age into both.
    Field("age_min", INT64, default=UNKNOWN),
    Field("age_max", INT64, default=UNKNOWN),  # an open range ("70+") ends at 100
    Field("age_histogram", FLOAT, per_age_bin=True),  # all zeros for an unknown age
    Field("age_range", INT64),  # class of age; -1 unknown
    Field("gender", INT64),  # 0 male, 1 female, -1 unknown
    Field("race", INT64, default=names.UNKNOWN_RACE),
    Field("filename", BYTES, default=""),  # the source file's base name, UTF-8
    Field("weight", FLOAT, default=1.0),  # the face's sample weight
    Field("height", INT64, parsed=False),
    Field("width", INT64, parsed=False),
)
BY_NAME = {field.name: field for field in FIELDS}
# The fields computed from the age label alone (an age, a range, or unknown).
AGE_FIELDS = ("age", "age_min", "age_max", "age_histogram", "age_range")
