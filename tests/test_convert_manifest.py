"""Labels from a manifest (--labels=FILE.csv|.jsonl): ages, ranges, unknowns, splits, weights,
skipped rows with their lines, refused headers and paths, and the CLI."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from agetf.data import (
    conversion,
    convert_config,
    dataset_files,
    labels,
    manifest,
    record_fields,
    schema,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _faces(faces_dir, root, count):
    """Copies `count` synthetic faces into root/people/ with names that carry no labels."""
    os.makedirs(root / "people" / "more", exist_ok=True)
    files = []
    for i, name in enumerate(sorted(os.listdir(faces_dir))[:count]):
        relative = f"people/{'more/' if i % 2 else ''}face{i:03d}.jpg"
        shutil.copy(os.path.join(faces_dir, name), root / relative)
        files.append(relative)
    return files


def _config(root, labels_file, output, **kwargs):
    return convert_config.ConvertConfig(input_dirs=[str(root)], output_dir=str(output),
                                        labels=str(labels_file), min_shards=1, workers=1,
                                        show_progress=False, **kwargs)


def _records(data_dir):
    found = {}
    for split in dataset_files.SPLITS:
        files = sorted(tf.io.gfile.glob(dataset_files.shard_pattern(data_dir, split)))
        for record in tf.data.TFRecordDataset(files):
            features = {k: v.numpy() for k, v in schema.parse_examples(record).items()}
            found[features["filename"].decode()] = dict(features, split=split)
    return found


def _write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_manifest_stores_ages_ranges_unknowns_splits_and_weights(faces_dir, tmp_path):
    root = tmp_path / "in"
    files = _faces(faces_dir, root, 24)
    lines = ["file,age,gender,race,split,weight",
             f"{files[0]},34,female,2,,",
             f"{files[1]},30-39,m,,train,2.5",
             f"{files[2]},70+,,,validation,",
             f"{files[3]},\"(25, 32)\",F,,test,",
             f"{files[4]},,male,,train,",
             f"{files[5]},7,1,,test,0.5"]
    lines += [f"{f},{20 + i},{i % 2},,train," for i, f in enumerate(files[6:])]
    report = conversion.convert(_config(root, _write_csv(tmp_path / "faces.csv", lines),
                                        tmp_path / "out"))
    assert report["total_kept"] == 24 and report["total_skipped"] == 0
    assert report["schema_version"] == record_fields.SCHEMA_VERSION == 2
    assert report["settings"]["labels_format"] == "manifest"
    records = _records(tmp_path / "out")
    assert set(records) == set(files)  # the relative path is the record's filename
    got = {f: (int(r["age"]), int(r["age_min"]), int(r["age_max"]), int(r["gender"]),
               int(r["race"]), float(r["weight"]), r["split"]) for f, r in records.items()}
    assert got[files[1]] == (34, 30, 39, 0, -1, 2.5, "train")
    assert got[files[2]] == (85, 70, 100, -1, -1, 1.0, "validation")
    assert got[files[3]] == (28, 25, 32, 1, -1, 1.0, "test")
    assert got[files[4]] == (-1, -1, -1, 0, -1, 1.0, "train")
    assert got[files[5]] == (7, 7, 7, 1, -1, 0.5, "test")
    assert got[files[0]][:6] == (34, 34, 34, 1, 2, 1.0)  # split by the hash
    np.testing.assert_allclose(records[files[1]]["age_histogram"], labels.range_histogram(30, 39))
    assert not records[files[4]]["age_histogram"].any()
    assert records[files[4]]["age_range"] == -1


def test_the_manifests_split_column_overrides_the_name_hash(faces_dir, tmp_path):
    root = tmp_path / "in"
    files = _faces(faces_dir, root, 30)
    lines = ["file,age,split"] + [f"{f},30,{'test' if i < 10 else 'train'}"
                                   for i, f in enumerate(files)]
    conversion.convert(_config(root, _write_csv(tmp_path / "m.csv", lines), tmp_path / "out"))
    splits = {f: r["split"] for f, r in _records(tmp_path / "out").items()}
    assert splits == {f: "test" if i < 10 else "train" for i, f in enumerate(files)}


def test_unusable_rows_are_skipped_with_their_line_and_reason(faces_dir, tmp_path):
    root = tmp_path / "in"
    files = _faces(faces_dir, root, 12)
    (root / "people" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    lines = ["file,age,gender", f"{files[0]},101,f", f"{files[1]},34,woman",
             "people/missing.jpg,34,f", f"{files[2]},40-30,m", f"{files[2]},abc,m",
             f"{files[3]},30,f", f"{files[3]},31,f", "people/broken.jpg,20,m"]
    lines += [f"{f},25,m" for f in files[4:]]
    report = conversion.convert(_config(root, _write_csv(tmp_path / "m.csv", lines),
                                        tmp_path / "out", split_ratios=(1.0, 0.0, 0.0)))
    skipped = {(item["line"], item["reason"]) for item in report["skipped"]}
    assert skipped == {(2, manifest.REASON_AGE_OUTSIDE), (3, manifest.REASON_GENDER),
                       (4, manifest.REASON_NO_FILE), (5, manifest.REASON_AGE_BACKWARDS),
                       (6, manifest.REASON_AGE), (8, manifest.REASON_DUPLICATE),
                       (9, "not a decodable image")}
    assert all(item["labels_file"] == "m.csv" for item in report["skipped"])
    assert report["total_kept"] == 9  # files[3] once, files[4:]


def test_a_jsonl_manifest_reads_like_the_csv(faces_dir, tmp_path):
    root = tmp_path / "in"
    files = _faces(faces_dir, root, 10)
    rows = [{"file": f, "age": 20 + i, "gender": ["m", "f"][i % 2]} for i, f in enumerate(files)]
    rows[0] = {"file": files[0], "age": "30-39", "gender": None, "weight": 3}
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    conversion.convert(_config(root, path, tmp_path / "out"))
    records = _records(tmp_path / "out")
    first = records[files[0]]
    assert (first["age_min"], first["age_max"], first["gender"], first["weight"]) == (30, 39, -1, 3)
    assert records[files[3]]["age"] == 23 and records[files[3]]["gender"] == 1


@pytest.mark.parametrize("header, message", [
    ("path,age,gender", "has no 'file' column"),
    ("file,race,split", "neither an 'age' nor a 'gender' column"),
])
def test_a_bad_header_is_refused_in_one_line_before_anything_is_written(
        faces_dir, tmp_path, header, message):
    root = tmp_path / "in"
    files = _faces(faces_dir, root, 2)
    path = _write_csv(tmp_path / "m.csv", [header] + [f"{f},1,2" for f in files])
    with pytest.raises(convert_config.ConversionError, match=message) as error:
        conversion.convert(_config(root, path, tmp_path / "out"))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("escape", ["../outside.jpg", "/etc/passwd", "people/../../outside.jpg",
                                    "link/face.jpg", "people/link.jpg"])
def test_a_path_leaving_the_input_folder_is_refused(faces_dir, tmp_path, escape):
    root = tmp_path / "in"
    files = _faces(faces_dir, root, 3)
    shutil.copy(root / files[0], tmp_path / "outside.jpg")
    os.makedirs(tmp_path / "elsewhere")
    shutil.copy(root / files[0], tmp_path / "elsewhere" / "face.jpg")
    os.symlink(tmp_path / "elsewhere", root / "link")
    os.symlink(tmp_path / "outside.jpg", root / "people" / "link.jpg")
    path = _write_csv(tmp_path / "m.csv", ["file,age", f"{files[1]},3", f"{escape},4"])
    with pytest.raises(convert_config.ConversionError, match="m.csv line 3: file .* (leaves|"
                       "leads out of|is an absolute)") as error:
        conversion.convert(_config(root, path, tmp_path / "out"))
    assert "\n" not in str(error.value)


def test_a_link_inside_the_input_folder_is_followed(faces_dir, tmp_path):
    root = tmp_path / "in"
    files = _faces(faces_dir, root, 12)
    os.symlink(root / files[0], root / "people" / "alias.jpg")
    lines = ["file,age"] + [f"{f},30" for f in files] + ["people/alias.jpg,31"]
    report = conversion.convert(_config(root, _write_csv(tmp_path / "m.csv", lines),
                                        tmp_path / "out"))
    assert report["total_kept"] == 13


def test_manifest_settings_that_cannot_work_are_refused():
    with pytest.raises(convert_config.ConversionError, match="one --input_dir"):
        convert_config.ConvertConfig(input_dirs=["a", "b"], output_dir="o", labels="m.csv")
    with pytest.raises(convert_config.ConversionError, match="--split_file does not combine"):
        convert_config.ConvertConfig(input_dirs=["a"], output_dir="o", labels="m.csv",
                                     split_file="s.csv")
    with pytest.raises(convert_config.ConversionError, match="--labels_format='imdb' is unknown"):
        convert_config.ConvertConfig(input_dirs=["a"], output_dir="o", labels_format="imdb")
    with pytest.raises(convert_config.ConversionError, match="appa_real only"):
        convert_config.ConvertConfig(input_dirs=["a"], output_dir="o", labels="m.csv",
                                     apparent_age=True)


@pytest.mark.parametrize("text, expected", [
    ("34", (34, None, None)), ("0", (0, None, None)), ("30-39", (34, 30, 39)),
    ("30 - 39", (34, 30, 39)), ("70+", (85, 70, 100)), ("(25, 32)", (28, 25, 32)),
    ("(8,12)", (10, 8, 12)), ("", (-1, None, None)), (None, (-1, None, None)),
    (34, (34, None, None)), (34.0, (34, None, None)), ("20-20", (20, None, None)),
])
def test_age_cells_parse(text, expected):
    assert manifest.parse_age(text) == expected


@pytest.mark.parametrize("text, reason", [
    ("101", manifest.REASON_AGE_OUTSIDE), ("95-110", manifest.REASON_AGE_OUTSIDE),
    ("-3", manifest.REASON_AGE), ("34.5", manifest.REASON_AGE), ("thirty", manifest.REASON_AGE),
    ("39-30", manifest.REASON_AGE_BACKWARDS), ("120+", manifest.REASON_AGE_OUTSIDE),
])
def test_bad_age_cells_give_their_reason(text, reason):
    with pytest.raises(manifest.BadRow, match=reason.replace("(", r"\(").replace(")", r"\)")
                       .replace("+", r"\+")):
        manifest.parse_age(text)


def test_gender_words_map_once():
    assert [manifest.parse_gender(w) for w in ("female", "F", "1", 1, "male", "m", "0", 0, "",
                                               None)] == [1, 1, 1, 1, 0, 0, 0, 0, -1, -1]
    with pytest.raises(manifest.BadRow):
        manifest.parse_gender("u")


def test_the_cli_converts_a_manifest(faces_dir, tmp_path):
    root = tmp_path / "in"
    files = _faces(faces_dir, root, 10)
    path = _write_csv(tmp_path / "m.csv", ["file,age,gender"] + [f"{f},30-39,f" for f in files])
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "make_tfrecords"), "--input_dir",
         str(root), "--labels", str(path), "--output_dir", str(tmp_path / "out"), "--workers=1",
         "--noprogress"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "kept 10 images" in result.stdout
    bad = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "make_tfrecords"), "--input_dir",
         str(root), "--labels", str(tmp_path / "nope.csv"), "--output_dir",
         str(tmp_path / "out2")], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("make_tfrecords: error: labels file")
