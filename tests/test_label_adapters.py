"""The dataset adapters (--labels_format), each on a tiny synthetic copy of its published layout:
IMDB-WIKI's .mat, APPA-REAL's gt_avg CSVs, AFAD's folders, Adience's fold files, FairFace's
label CSVs."""

import datetime
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from agetf.data import conversion, convert_config, dataset_files, manifest, schema
from agetf.data.label_adapters import imdb_wiki


def _face(faces_dir, index):
    return os.path.join(faces_dir, sorted(os.listdir(faces_dir))[index])


def _place(faces_dir, root, relative, index):
    os.makedirs(os.path.dirname(os.path.join(root, relative)), exist_ok=True)
    shutil.copy(_face(faces_dir, index), os.path.join(root, relative))


def _convert(root, tmp_path, labels_format, labels=None, **kwargs):
    config = convert_config.ConvertConfig(
        input_dirs=[str(root)], output_dir=str(tmp_path / "out"), labels_format=labels_format,
        labels=None if labels is None else str(labels), min_shards=1, workers=1,
        show_progress=False, **kwargs)
    return conversion.convert(config)


def _records(data_dir):
    found = {}
    for split in dataset_files.SPLITS:
        for record in tf.data.TFRecordDataset(
                sorted(tf.io.gfile.glob(dataset_files.shard_pattern(data_dir, split)))):
            features = schema.parse_examples(record)
            found[features["filename"].numpy().decode()] = (
                int(features["age"]), int(features["age_min"]), int(features["age_max"]),
                int(features["gender"]), split)
    return found


def _datenum(year, month, day):
    return datetime.date(year, month, day).toordinal() + imdb_wiki.MATLAB_ORDINAL_OFFSET


def test_imdb_wiki_reads_the_mat_with_mid_year_ages_and_its_skips(faces_dir, tmp_path):
    from scipy.io import savemat

    root = tmp_path / "imdb_crop"
    # (path, birth date, photo year, face score, second face score, gender 1 male/0 female/NaN)
    entries = [("01/nm01_a.jpg", (1960, 3, 1), 1990, 3.5, np.nan, 1.0),  # 30
               ("01/nm01_b.jpg", (1960, 9, 1), 1990, 2.0, np.nan, 0.0),  # 29: born after July
               ("02/nm02_a.jpg", (1970, 1, 1), 2000, 0.5, np.nan, 1.0),  # face score too low
               ("02/nm02_b.jpg", (1970, 1, 1), 2000, -np.inf, np.nan, 1.0),  # no face found
               ("03/nm03_a.jpg", (1980, 1, 1), 2010, 4.0, 1.2, 0.0),  # a second face
               ("03/nm03_b.jpg", (2015, 1, 1), 2010, 4.0, np.nan, 0.0),  # born after the photo
               ("04/nm04_a.jpg", (1950, 6, 30), 2000, 4.0, np.nan, np.nan)]  # 50, gender unknown
    entries += [(f"05/nm05_{i}.jpg", (1990, 1, 1), 2010, 3.0, np.nan, 1.0) for i in range(8)]
    for index, entry in enumerate(entries):
        _place(faces_dir, root, entry[0], index)
    fields = ("full_path", "dob", "photo_taken", "face_score", "second_face_score", "gender")
    columns = list(zip(*entries))
    full_path = np.empty((1, len(entries)), dtype=object)  # a Matlab cell array of strings
    full_path[0, :] = columns[0]
    struct = {
        "full_path": full_path,
        "dob": np.array([[_datenum(*d) for d in columns[1]]], dtype=float),
        "photo_taken": np.array([columns[2]], dtype=np.uint16),
        "face_score": np.array([columns[3]]),
        "second_face_score": np.array([columns[4]]),
        "gender": np.array([columns[5]]),
    }
    assert set(struct) == set(fields)
    savemat(str(root / "imdb.mat"), {"imdb": struct})
    report = _convert(root, tmp_path, "imdb_wiki", split_ratios=(1.0, 0.0, 0.0))
    records = _records(tmp_path / "out")
    assert records["01/nm01_a.jpg"][:4] == (30, 30, 30, 0)
    assert records["01/nm01_b.jpg"][:4] == (29, 29, 29, 1)
    assert records["04/nm04_a.jpg"][:4] == (50, 50, 50, -1)
    skipped = {item["path"].split("imdb_crop/")[1]: (item["reason"], item["line"])
               for item in report["skipped"]}
    assert skipped == {"02/nm02_a.jpg": (imdb_wiki.REASON_FACE_SCORE, 3),
                       "02/nm02_b.jpg": (imdb_wiki.REASON_FACE_SCORE, 4),
                       "03/nm03_a.jpg": (imdb_wiki.REASON_SECOND_FACE, 5),
                       "03/nm03_b.jpg": (imdb_wiki.REASON_IMPOSSIBLE_AGE, 6)}
    assert report["total_kept"] == 11 and report["settings"]["labels_format"] == "imdb_wiki"
    # a lower --min_face_score keeps the 0.5 face
    report = _convert(root, tmp_path, "imdb_wiki", split_ratios=(1.0, 0.0, 0.0),
                      min_face_score=0.4, overwrite=True)
    assert report["total_kept"] == 12


def test_age_at_mid_year_matches_the_authors_rule():
    assert imdb_wiki.age_at_mid_year(_datenum(1980, 6, 30), 2000) == 20
    assert imdb_wiki.age_at_mid_year(_datenum(1980, 7, 1), 2000) == 19


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


@pytest.mark.parametrize("apparent", [False, True])
def test_appa_real_reads_the_gt_avg_csvs_and_keeps_their_split(faces_dir, tmp_path, apparent):
    root = tmp_path / "appa-real-release"
    header = "file_name,num_ratings,apparent_age_avg,apparent_age_std,real_age\n"
    rows = {"train": [("000000.jpg", 36.2, 35), ("000001.jpg", 21.6, 24), ("000002.jpg", 50, 48),
                      ("000003.jpg", 8.4, 7)],
            "valid": [("004113.jpg", 29.5, 30)], "test": [("005613.jpg", 60.7, 66)]}
    index = 0
    for folder, items in rows.items():
        _write(root / f"gt_avg_{folder}.csv", header + "".join(
            f"{name},38,{apparent_age},4.1,{real}\n" for name, apparent_age, real in items))
        for name, _, _ in items:
            _place(faces_dir, root, f"{folder}/{name}_face.jpg", index)
            _place(faces_dir, root, f"{folder}/{name}", index)  # the uncropped photo
            index += 1
    _write(root / "allcategories_train.csv", "file,gender,race,makeup,time,happiness\n"
           "000000.jpg,male,caucasian,makeup,young,happy\n"
           "000001.jpg,female,asian,no_makeup,young,neutral\n")
    _convert(root, tmp_path, "appa_real", apparent_age=apparent)
    records = _records(tmp_path / "out")
    assert set(records) == {f"{folder}/{name}_face.jpg" for folder, items in rows.items()
                            for name, _, _ in items}
    first = records["train/000000.jpg_face.jpg"]
    assert first == ((36 if apparent else 35),) * 3 + (0, "train")
    assert records["train/000001.jpg_face.jpg"][3] == 1
    assert records["train/000002.jpg_face.jpg"][3] == -1  # no allcategories row
    assert records["valid/004113.jpg_face.jpg"][4] == "validation"
    assert records["test/005613.jpg_face.jpg"][0] == (61 if apparent else 66)


def test_afad_reads_age_and_gender_from_its_folders(faces_dir, tmp_path):
    root = tmp_path / "AFAD-Full"
    layout = {"15/111/a.jpg": (15, 0), "15/112/b.jpg": (15, 1), "40/111/c.jpg": (40, 0),
              "72/112/d.jpg": (72, 1), "72/112/e.jpg": (72, 1), "33/112/f.jpg": (33, 1),
              "33/111/g.jpg": (33, 0), "21/111/h.jpg": (21, 0)}
    for index, relative in enumerate(layout):
        _place(faces_dir, root, relative, index)
    _place(faces_dir, root, "stray/x.jpg", 9)
    _write(root / "AFAD-Full.txt", "not an image")
    report = _convert(root, tmp_path, "afad")
    records = _records(tmp_path / "out")
    assert {f: r[:4] for f, r in records.items()} == {
        f: (age, age, age, gender) for f, (age, gender) in layout.items()}
    assert [item["reason"] for item in report["skipped"]] == ["not under AGE/111 or AGE/112"]


def test_adience_reads_fold_files_with_ranges_and_unknown_genders(faces_dir, tmp_path):
    root = tmp_path / "aligned"
    header = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\t"
              "fiducial_yaw_angle\tfiducial_score\n")
    faces = [("30601258@N03", "10399646885_67c7d20df9_o.jpg", 1, "(25, 32)", "f"),
             ("30601258@N03", "10424815813_e94629b1ec_o.jpg", 2, "(38, 43)", "m"),
             ("7153718@N04", "11597560396_7cb0cb9ed5_o.jpg", 3, "35", "u"),
             ("7153718@N04", "11597560396_7cb0cb9ed5_o.jpg", 4, "None", "f"),
             ("115321157@N03", "12111738395_a7f715aa4e_o.jpg", 5, "(60, 100)", ""),
             ("115321157@N03", "12111738396_a7f715aa4e_o.jpg", 6, "(0, 2)", "m"),
             ("115321157@N03", "12111738397_a7f715aa4e_o.jpg", 7, "(8, 12)", "f"),
             ("115321157@N03", "12111738398_a7f715aa4e_o.jpg", 8, "(15, 20)", "m")]
    lines = [f"{user}\t{image}\t{face}\t{age}\t{gender}\t0\t0\t10\t10\t0\t0\t50\n"
             for user, image, face, age, gender in faces]
    _write(root / "fold_0_data.txt", header + "".join(lines[:5]))
    _write(root / "fold_1_data.txt", header + "".join(lines[5:]))
    for index, (user, image, face, _, _) in enumerate(faces):
        prefix = "landmark_aligned_face" if index % 2 else "coarse_tilt_aligned_face"
        _place(faces_dir, root, f"{user}/{prefix}.{face}.{image}", index)
    report = _convert(root, tmp_path, "adience")
    assert report["total_kept"] == 8
    by_face = {int(name.split(".")[1]): r[:4] for name, r in _records(tmp_path / "out").items()}
    assert by_face == {1: (28, 25, 32, 1), 2: (40, 38, 43, 0), 3: (35, 35, 35, -1),
                       4: (-1, -1, -1, 1), 5: (80, 60, 100, -1), 6: (1, 0, 2, 0),
                       7: (10, 8, 12, 1), 8: (17, 15, 20, 0)}


def test_fairface_reads_its_label_csvs_and_tests_on_val(faces_dir, tmp_path):
    root = tmp_path / "fairface"
    header = "file,age,gender,race,service_test\n"
    train = [("train/1.jpg", "50-59", "Male", "East Asian"), ("train/2.jpg", "30-39", "Female",
                                                               "Indian"),
             ("train/3.jpg", "more than 70", "Female", "White"),
             ("train/4.jpg", "0-2", "Male", "Black"), ("train/5.jpg", "3-9", "Female", "White")]
    val = [("val/1.jpg", "20-29", "Male", "Latino_Hispanic"),
           ("val/2.jpg", "10-19", "Female", "Middle Eastern")]
    _write(root / "fairface_label_train.csv",
           header + "".join(f"{f},{a},{g},{r},True\n" for f, a, g, r in train))
    _write(root / "fairface_label_val.csv",
           header + "".join(f"{f},{a},{g},{r},False\n" for f, a, g, r in val))
    for index, (relative, _, _, _) in enumerate(train + val):
        _place(faces_dir, root, relative, index)
    _convert(root, tmp_path, "fairface", split_ratios=(1.0, 0.0, 0.0))
    records = _records(tmp_path / "out")
    assert records["train/1.jpg"] == (54, 50, 59, 0, "train")
    assert records["train/3.jpg"] == (85, 70, 100, 1, "train")
    assert records["train/4.jpg"][:3] == (1, 0, 2)
    assert records["val/1.jpg"] == (24, 20, 29, 0, "test")
    assert records["val/2.jpg"][4] == "test"


def test_an_adapter_without_its_label_files_says_so_in_one_line(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"x")
    for labels_format, message in (("imdb_wiki", "imdb.mat do not exist"),
                                   ("fairface", "holds no FairFace label files"),
                                   ("adience", "holds no Adience fold files")):
        with pytest.raises(convert_config.ConversionError, match=message) as error:
            _convert(tmp_path / "in", tmp_path, labels_format)
        assert "\n" not in str(error.value)


def test_every_adapter_writes_manifest_rows():
    from agetf.data import label_adapters

    for name in label_adapters.FORMATS:
        module = __import__(f"agetf.data.label_adapters.{name}", fromlist=["rows"])
        assert callable(module.rows)
    assert manifest.Row(line=1, labels_file="x", file="a.jpg").skip is None
