"""File-name parsing: UTKFace, its malformed real-world names, and the older project's names."""

import pytest

from agetf.data import names
from agetf.data.names import FaceLabels


@pytest.mark.parametrize("file_name, expected", [
    ("25_1_3_20170116174525125.jpg", FaceLabels(25, 1, 3)),
    ("25_1_3_20170116174525125.jpg.chip.jpg", FaceLabels(25, 1, 3)),
    ("0_0_0_20170110215648859.jpg.chip.jpg", FaceLabels(0, 0, 0)),
    ("116_1_4_20170110215648859.jpg.chip.jpg", FaceLabels(116, 1, 4)),
    # Real UTKFace oddities that still parse unambiguously.
    ("39_1_20170116174525125.jpg.chip.jpg", FaceLabels(39, 1, names.UNKNOWN_RACE)),
    ("61_1_3_20170109150557335.jpgchip.jpg", FaceLabels(61, 1, 3)),
    ("55_0_0_20170116232725357jpg.chip.jpg", FaceLabels(55, 0, 0)),
    ("24_0_1_20170116220224657 .jpg.chip.jpg", FaceLabels(24, 0, 1)),
    ("61_1_20170109142408075.jpg.chip.jpg", FaceLabels(61, 1, names.UNKNOWN_RACE)),
    ("14_0_0_2017011022340900.jpg.chip.jpg", FaceLabels(14, 0, 0)),     # a 16-digit datetime
    ("28_1_2_201701161846515488.jpg.chip.jpg", FaceLabels(28, 1, 2)),   # an 18-digit one
    ("24_0_1_20170116220224657.JPG", FaceLabels(24, 0, 1)),
    ("24_0_1_20170116220224657.JPG.CHIP.JPG", FaceLabels(24, 0, 1)),
    ("24_0_1_20170116220224657.jpeg", FaceLabels(24, 0, 1)),
    # The older project's <id>_<age>_<gender>.jpg (age before gender, not the rename bug's order).
    ("1234_35_0.jpg", FaceLabels(35, 0, names.UNKNOWN_RACE)),
    ("7_2_1.jpg", FaceLabels(2, 1, names.UNKNOWN_RACE)),
    ("img7_60_1.JPG", FaceLabels(60, 1, names.UNKNOWN_RACE)),
])
def test_parses(file_name, expected):
    assert names.parse_face_name(file_name) == expected


@pytest.mark.parametrize("file_name, notes", [
    ("25_1_3_20170116174525125.jpg.chip.jpg", ()),
    ("25_1_3_20170116174525125.JPG", ()),
    ("1234_35_0.jpg", ()),  # the older project's names never had a race field: nothing odd
    # Every kind of odd name in the real UTKFace, by its real name.
    ("39_1_20170116174525125.jpg.chip.jpg", (names.NOTE_NO_RACE,)),
    ("55_0_0_20170116232725357jpg.chip.jpg", (names.NOTE_NO_DOT,)),
    ("61_1_3_20170109150557335.jpgchip.jpg", (names.NOTE_NO_DOT,)),
    ("24_0_1_20170116220224657 .jpg.chip.jpg", (names.NOTE_SPACE,)),
    ("14_0_0_2017011022340900.jpg.chip.jpg", (names.NOTE_DATETIME_DIGITS,)),
    ("38_0_1_201701162330572788.jpg.chip.jpg", (names.NOTE_DATETIME_DIGITS,)),
    ("61_1_2017010914240807 jpg", (names.NOTE_NO_RACE, names.NOTE_NO_DOT, names.NOTE_SPACE,
                                   names.NOTE_DATETIME_DIGITS)),
])
def test_odd_names_that_parse_get_notes(file_name, notes):
    labels, got = names.parse_face_name_with_notes(file_name)
    assert labels == names.parse_face_name(file_name)
    assert got == notes and set(got) <= set(names.NOTES)


@pytest.mark.parametrize("file_name, reason", [
    ("53__0_20170116184028385.jpg.chip.jpg", names.REASON_EMPTY_FIELD),
    ("_25_0_1_20170116184028385.jpg", names.REASON_EMPTY_FIELD),
    ("117_0_0_20170116184028385.jpg", names.REASON_AGE),
    ("25_2_0_20170116184028385.jpg", names.REASON_GENDER),
    ("61_3_20170109150557335.jpg.chip.jpg", names.REASON_GENDER),
    ("25_0_5_20170116184028385.jpg", names.REASON_RACE),
    ("1234_35_7.jpg", names.REASON_GENDER),
    ("1234_200_0.jpg", names.REASON_AGE),
    ("README.txt", names.REASON_NOT_IMAGE_NAME),
    ("25_0_1_20170116184028385.jpg.txt", names.REASON_NOT_IMAGE_NAME),
    (".DS_Store", names.REASON_NOT_IMAGE_NAME),
    ("face.jpg", names.REASON_UNRECOGNIZED),
    ("25_0_1_2_20170116184028385.jpg", names.REASON_UNRECOGNIZED),
    ("a_b_c_d.jpg", names.REASON_UNRECOGNIZED),
    ("25_x_1_20170116184028385.jpg", names.REASON_UNRECOGNIZED),
])
def test_rejects_with_reason(file_name, reason):
    with pytest.raises(names.UnparseableName) as info:
        names.parse_face_name(file_name)
    assert info.value.reason == reason
    assert reason in names.REASONS
    assert file_name in str(info.value) and "\n" not in str(info.value)


def test_reads_base_name_only():
    # The older project parsed the full path, so an underscore in a folder broke every label.
    path = "/data/my_faces_2019/part_1/25_1_3_20170116174525125.jpg.chip.jpg"
    assert names.parse_face_name(path) == FaceLabels(25, 1, 3)
    with pytest.raises(names.UnparseableName):
        names.parse_face_name("/data/25_1_3_20170116174525125/notes.txt")


def test_labels_are_frozen():
    labels = names.parse_face_name("25_1_3_20170116174525125.jpg")
    with pytest.raises(AttributeError):
        labels.age = 3
