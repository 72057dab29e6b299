"""--split_file: the CORAL paper's per-split CSVs (train=A.csv,test=B.csv), validation carved
from train by hash, rows the input lacks, the age column, bad specs; the one-file form too."""

import csv
import os
import subprocess
import sys

import pytest

from agetf.data import (
    conversion,
    conversion_report,
    convert_config,
    dataset_files,
    names,
    schema,
    split_files,
    synthetic,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GHOSTS = {"train": ["30_0_0_20170101000000991.jpg.chip.jpg",
                    "44_1_1_20170101000000992.jpg.chip.jpg"],
          "test": ["50_0_2_20170101000000993.jpg.chip.jpg"]}


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coral_faces")
    synthetic.write_synthetic_faces(str(folder), count=40, seed=11, size=32)
    return str(folder), sorted(os.listdir(folder))


def write_coral_csv(path, file_names, offset=split_files.CORAL_AGE_OFFSET,
                    header=("", "file", "age")):
    """A CSV as the CORAL split publishes it: an unnamed index, file, age class (age - 21)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for index, file_name in enumerate(file_names):
            writer.writerow([index * 2 + 1, file_name,
                             names.parse_face_name(file_name).age - offset])
    return str(path)


def coral_spec(tmp_path, file_names):
    """train= the first 30 faces and two absent ones, test= the next 8 and one absent;
    2 unlisted."""
    train = write_coral_csv(tmp_path / "utk_train.csv", file_names[:30] + GHOSTS["train"])
    test = write_coral_csv(tmp_path / "utk_test.csv", file_names[30:38] + GHOSTS["test"])
    return f"train={train},test={test}"


def convert(input_dir, output_dir, **settings):
    settings = {"min_shards": 1, "workers": 1, "show_progress": False, **settings}
    return conversion.convert(convert_config.ConvertConfig(
        input_dirs=[input_dir], output_dir=str(output_dir), **settings))


def splits_of(data_dir):
    """{file name: split} of every record written, read back from the shards."""
    import tensorflow as tf

    found = {}
    for split in dataset_files.SPLITS:
        for shard in tf.io.gfile.glob(dataset_files.shard_pattern(str(data_dir), split)):
            for record in tf.data.TFRecordDataset(shard):
                found[schema.parse_examples(record)["filename"].numpy().decode()] = split
    return found


def test_coral_files_give_exactly_their_splits_with_validation_carved_from_train_by_hash(
        faces, tmp_path):
    folder, file_names = faces
    spec = coral_spec(tmp_path, file_names)
    report = convert(folder, tmp_path / "a", split_file=spec, split_ratios=(0.5, 0.4, 0.1))

    share = 0.4 / (0.5 + 0.4)
    carved = {name: split_files.assign_split(name, (1 - share, share, 0.0))
              for name in file_names[:30]}
    expected = {**carved, **dict.fromkeys(file_names[30:38], "test")}
    assert 0 < list(carved.values()).count("validation") < 30  # both sides of the cut are used
    assert splits_of(tmp_path / "a") == expected
    assert report["counts"] == {split: list(expected.values()).count(split)
                                for split in dataset_files.SPLITS}

    # Files of the input named in no split file are left out, and counted.
    assert report["skipped_by_reason"] == {conversion.REASON_NOT_IN_SPLIT_FILE: 2}
    assert {os.path.basename(item["path"]) for item in report["skipped"]} == set(file_names[38:])

    settings = report["settings"]
    assert settings["split_file"] == {"train": str(tmp_path / "utk_train.csv"),
                                      "test": str(tmp_path / "utk_test.csv")}
    assert (settings["split_file_rows"] == 41
            and settings["split_file_rows_by_file"] == {"train": 32, "test": 9})
    assert settings["split_file_validation_share"] == pytest.approx(share)
    assert "validation/(train+validation) of --split_ratios=0.5,0.4,0.1" in settings["split_method"]
    assert settings["split_file_age_check"] == (
        "train: CORAL class (age - 21) in all 32 rows with a parseable name; test: CORAL class "
        "(age - 21) in all 9 rows with a parseable name")
    # Rows naming files the input lacks: listed, counted per file, and warned about once.
    assert settings["split_file_missing"] == sorted(GHOSTS["train"] + GHOSTS["test"])
    assert settings["split_file_missing_by_file"] == {"train": 2, "test": 1}
    warnings = [line for line in conversion_report.summarize(report).splitlines()
                if "warning" in line]
    assert len(warnings) == 1
    assert "3 files of the split files are not in the input (train= 2, test= 1, e.g." in warnings[0]

    # Deterministic: another run, and another order of the rows, give the same splits.
    write_coral_csv(tmp_path / "utk_train.csv", GHOSTS["train"] + file_names[:30][::-1])
    convert(folder, tmp_path / "b", split_file=spec, split_ratios=(0.5, 0.4, 0.1))
    assert splits_of(tmp_path / "b") == expected


@pytest.mark.slow
def test_the_script_reads_per_split_files(faces, tmp_path):
    folder, file_names = faces
    spec = coral_spec(tmp_path, file_names)
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "make_tfrecords"), "--input_dir", folder,
         "--output_dir", str(tmp_path / "out"), f"--split_file={spec}", "--workers=1",
         "--noprogress", "--min_shards=1"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "3 files of the split files are not in the input (train= 2, test= 1" in result.stdout
    found = splits_of(tmp_path / "out")
    assert {name for name, split in found.items() if split != "test"} == set(file_names[:30])
    assert {name for name, split in found.items() if split == "test"} == set(file_names[30:38])


def test_a_validation_file_replaces_the_carving(faces, tmp_path):
    _, file_names = faces
    train = write_coral_csv(tmp_path / "train.csv", file_names[:20])
    validation = write_coral_csv(tmp_path / "val.csv", file_names[20:25], offset=0)  # ages in years
    plan = split_files.read_split_files(f"train={train},validation={validation}")
    assert plan.splits == {**dict.fromkeys(file_names[:20], "train"),
                           **dict.fromkeys(file_names[20:25], "validation")}
    assert plan.validation_share is None
    assert "validation: age in years in all 5 rows" in plan.age_check
    assert "hash" not in plan.method


def test_the_one_file_form_still_reads_file_name_split_rows(faces, tmp_path):
    _, file_names = faces
    (tmp_path / "a=b").mkdir()
    path = tmp_path / "a=b" / "splits.csv"  # a folder with '=' is still one file's path
    path.write_text("filename,split\n" + "".join(f"{name},test\n" for name in file_names[:3]))
    for text in (str(path), os.path.relpath(path)):
        plan = split_files.read_split_files(text)
        assert plan.splits == dict.fromkeys(file_names[:3], "test")
        assert (plan.files == {split_files.ONE_SPLIT_FILE: str(path)}
                and plan.validation_share is None)


def bad_csvs(tmp_path, file_names):
    write_coral_csv(tmp_path / "train.csv", file_names[:10])
    write_coral_csv(tmp_path / "test.csv", file_names[10:14])
    write_coral_csv(tmp_path / "noname.csv", file_names[:5], header=("", "image", "age"))
    write_coral_csv(tmp_path / "wrong_age.csv", file_names[:5], offset=20)
    write_coral_csv(tmp_path / "overlap.csv", file_names[8:12])
    (tmp_path / "bad_age.csv").write_text(f",file,age\n1,{file_names[0]},old\n")
    (tmp_path / "empty.csv").write_text(",file,age\n")


@pytest.mark.parametrize("spec, message", [
    ("train=train.csv,val=test.csv", "unknown split 'val'; use train=, validation=, test="),
    ("train=train.csv,test=missing.csv",
     "cannot read --split_file test=missing.csv (No such file or directory)"),
    ("train=noname.csv,test=test.csv", "has no 'file' column"),
    ("test=test.csv", "has no train= file"),
    ("train=train.csv,train=test.csv", "names train= twice"),
    ("train=,test=test.csv", "train= has no file name"),
    ("train=train.csv,test.csv", "part 'test.csv' is not SPLIT=FILE"),
    ("train=wrong_age.csv", "age column disagrees with the file names' ages in 5 of 5 rows"),
    ("train=bad_age.csv", "age 'old' is not a whole number"),
    ("train=train.csv,test=overlap.csv", "in both train= and test="),
    ("train=empty.csv", "lists no file"),
])
def test_bad_specs_are_one_line_errors_naming_the_fix(faces, tmp_path, monkeypatch, spec, message):
    folder, file_names = faces
    bad_csvs(tmp_path, file_names)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(convert_config.ConversionError) as error:
        convert(folder, tmp_path / "out", split_file=spec)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists(), "nothing may be written for a bad split file"


def test_an_age_mismatch_names_the_row_and_both_ages(faces, tmp_path):
    _, file_names = faces
    rows = [[1, file_names[0], names.parse_face_name(file_names[0]).age - 21],
            [2, file_names[1], 3]]
    with open(tmp_path / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([["", "file", "age"], *rows])
    age = names.parse_face_name(file_names[1]).age
    with pytest.raises(convert_config.ConversionError, match=(
            f"in 1 of 2 rows read as the CORAL class \\(age - 21\\), e.g. row 3: "
            f"{file_names[1]} has 3, its name says {age} \\(class {age - 21}\\); fix the file or "
            "remove its age column")):
        split_files.read_split_files(f"train={tmp_path / 'train.csv'}")


# -- the split-file parser alone (agetf.data.split_files), no conversion ---------------------

def test_a_spec_names_one_file_or_one_file_per_split(tmp_path):
    one = tmp_path / "splits.csv"
    one.write_text("filename,split\n")
    assert split_files.parse_split_file_spec(f" {one} ") == {split_files.ONE_SPLIT_FILE: str(one)}
    assert split_files.parse_split_file_spec("train=a.csv, test = b.csv") == {
        "train": "a.csv", "test": "b.csv"}
    assert split_files.parse_split_file_spec("train=~/a.csv") == {
        "train": os.path.expanduser("~/a.csv")}


def test_the_one_file_form_reads_rows_with_or_without_a_header(tmp_path):
    path = tmp_path / "splits.csv"
    path.write_text("a/1_0_0_1.jpg, train\n\n2_1_0_2.jpg,test\n")
    assert split_files.read_split_file(str(path)) == {"1_0_0_1.jpg": "train", "2_1_0_2.jpg": "test"}
    path.write_text("filename,split\n1_0_0_1.jpg,train\n1_0_0_1.jpg,test\n")
    with pytest.raises(convert_config.ConversionError,
                       match="puts 1_0_0_1.jpg in both train and test"):
        split_files.read_split_file(str(path))
    path.write_text("1_0_0_1.jpg,holdout\n")
    with pytest.raises(convert_config.ConversionError, match="row 1 .* is not 'file name,split'"):
        split_files.read_split_file(str(path))


def test_a_written_split_file_reads_back_the_same_splits(tmp_path):
    kept = {"train": ["b.jpg", "a.jpg"], "validation": ["c.jpg"], "test": []}
    path = tmp_path / split_files.SPLIT_FILE
    split_files.write_split_file(str(path), kept)
    assert path.read_text().splitlines() == ["filename,split", "a.jpg,train", "b.jpg,train",
                                             "c.jpg,validation"]
    assert split_files.read_split_file(str(path)) == {"a.jpg": "train", "b.jpg": "train",
                                                      "c.jpg": "validation"}


def test_a_per_split_table_reads_the_file_and_age_columns(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(",File,age\n0,x/30_0_0_20170101000000001.jpg,9\n1,31_1_0_20170101000000002.jpg,10\n")
    table = split_files.read_split_table(str(path), "--split_file train=train.csv")
    assert table == [(2, "30_0_0_20170101000000001.jpg", 9),
                     (3, "31_1_0_20170101000000002.jpg", 10)]
    assert split_files.check_age_column(table, "train").startswith(
        "CORAL class (age - 21) in all 2")
    years = [(number, name, age + 21) for number, name, age in table]
    assert split_files.check_age_column(years, "train").startswith("age in years in all 2")
