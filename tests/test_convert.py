"""The TFRecord converter: counts, splits, bad input, refusal, interruption, TFDS loading, CLI."""

import errno
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from agetf.common import folder_swap
from agetf.data import (
    conversion,
    conversion_report,
    conversion_workers,
    convert_config,
    dataset_files,
    image_files,
    labels,
    names,
    record_encoder,
    record_fields,
    schema,
    shard_writer,
    split_files,
    synthetic,
)

from conftest import NUM_FACES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read_split(data_dir, split):
    """Every record of a split, read with tf.data and the schema's parser, keyed by filename."""
    files = sorted(tf.io.gfile.glob(dataset_files.shard_pattern(data_dir, split)))
    if not files:
        return {}
    dataset = tf.data.TFRecordDataset(files).batch(16).map(schema.parse_examples)
    records = {}
    for batch in dataset.as_numpy_iterator():
        for i, file_name in enumerate(batch["filename"]):
            records[file_name.decode()] = {key: value[i] for key, value in batch.items()}
    return records


def _report(data_dir):
    with open(os.path.join(data_dir, dataset_files.REPORT_FILE)) as f:
        return json.load(f)


def _config(input_dirs, output_dir, **kwargs):
    settings = dict(min_shards=1, workers=1, show_progress=False)
    settings.update(kwargs)
    return convert_config.ConvertConfig(input_dirs=list(input_dirs), output_dir=str(output_dir),
                                        **settings)


def _copy_faces(faces_dir, destination, start, stop):
    os.makedirs(destination, exist_ok=True)
    chosen = sorted(os.listdir(faces_dir))[start:stop]
    for file_name in chosen:
        shutil.copy(os.path.join(faces_dir, file_name), destination)
    return chosen


def _splits_of(data_dir):
    return {name: split for split in dataset_files.SPLITS for name in _read_split(data_dir, split)}


def test_report_counts_equal_readable_records_with_right_labels(data_dir):
    report = _report(data_dir)
    assert report["schema_version"] == record_fields.SCHEMA_VERSION
    assert report["total_kept"] == NUM_FACES and report["total_skipped"] == 0
    for split in dataset_files.SPLITS:
        records = _read_split(data_dir, split)
        assert len(records) == report["counts"][split] > 0
        # min_shards=2, far below the size-based count
        assert report["settings"]["shards"][split] == 2
        sizes = {}
        for record in records.values():
            height, width, _ = tf.io.extract_jpeg_shape(record["image"]).numpy()
            key = f"{height}x{width}"
            sizes[key] = sizes.get(key, 0) + 1
        assert report["image_sizes"][split] == sizes  # the pipeline trusts these for its canvas
        for file_name, record in records.items():
            expected = names.parse_face_name(file_name)
            assert (record["age"], record["gender"], record["race"]) == (
                expected.age, expected.gender, expected.race)
            assert record["age_range"] == labels.age_range(expected.age)
            np.testing.assert_allclose(record["age_histogram"],
                                       labels.age_histogram(expected.age, 5.0))
    assert report["settings"]["age_deviation"] == 5.0
    assert report["settings"]["num_age_bins"] == labels.NUM_AGE_BINS
    assert report["images_per_second"] > 0
    assert report["kept_with_notes"] == {}  # well-formed names earn no note
    assert report["settings"]["split_method"].startswith("SHA-1 hash of the file name")


def test_splits_are_disjoint_complete_and_near_the_ratios(data_dir, faces_dir):
    splits = {split: set(_read_split(data_dir, split)) for split in dataset_files.SPLITS}
    assert not splits["train"] & splits["validation"]
    assert not splits["train"] & splits["test"]
    assert not splits["validation"] & splits["test"]
    assert set().union(*splits.values()) == set(os.listdir(faces_dir))
    assert 0.65 < len(splits["train"]) / NUM_FACES < 0.92


def test_records_are_not_sorted_by_age_within_a_shard(data_dir):
    # UTKFace names start with the age: writing in name order would put one age band per shard.
    first_shard = sorted(tf.io.gfile.glob(dataset_files.shard_pattern(data_dir, "train")))[0]
    ages = [schema.parse_examples(record)["age"].numpy()
            for record in tf.data.TFRecordDataset(first_shard)]
    assert ages != sorted(ages)


def test_tfds_loads_every_split_with_the_right_counts_and_keys(data_dir):
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(data_dir)
    report = _report(data_dir)
    assert set(builder.info.splits) == set(dataset_files.SPLITS)
    for split in dataset_files.SPLITS:
        assert builder.info.splits[split].num_examples == report["counts"][split]
        dataset = builder.as_dataset(split=split)
        assert sum(1 for _ in dataset) == report["counts"][split]
    example = next(iter(builder.as_dataset(split="validation")))
    assert set(example) == {"image", "age", "age_min", "age_max", "age_histogram", "age_range",
                            "gender", "race", "filename", "weight", "height", "width"}
    assert example["image"].shape == (200, 200, 3) and example["image"].dtype == tf.uint8


def test_adding_files_never_moves_an_image_between_splits(faces_dir, tmp_path):
    first = _copy_faces(faces_dir, tmp_path / "in", 0, 30)
    conversion.convert(_config([tmp_path / "in"], tmp_path / "before"))
    _copy_faces(faces_dir, tmp_path / "in", 30, 60)
    conversion.convert(_config([tmp_path / "in"], tmp_path / "after"))
    before, after = _splits_of(str(tmp_path / "before")), _splits_of(str(tmp_path / "after"))
    assert set(before) == set(first) and len(after) == 60
    assert {name: after[name] for name in first} == before


def _write_bad_inputs(faces_dir, root):
    """Good faces in a nested folder plus one file per bad-input case; returns {name: expected}."""
    good = _copy_faces(faces_dir, root / "part_1" / "nested_dir", 0, 8)
    source = root / "part_1" / "nested_dir" / good[0]
    data = source.read_bytes()
    pixels = np.asarray(Image.open(source))
    expected = {name: "kept" for name in good}

    def write(name, content, outcome):
        (root / name).write_bytes(content)
        expected[name] = outcome

    def save(name, image, image_format, outcome="kept", **options):
        image.save(root / name, format=image_format, **options)
        expected[name] = outcome

    write("30_0_1_20170101000000001.jpg.chip.jpg", b"", image_files.REASON_EMPTY)
    write("31_0_1_20170101000000002.jpg.chip.jpg", data[: len(data) // 2],
          image_files.REASON_TRUNCATED)
    write("32_1_1_20170101000000003.jpg.chip.jpg", b"not an image\n" * 20,
          image_files.REASON_NOT_IMAGE)
    save("33_1_2_20170101000000004.jpg.chip.jpg", Image.fromarray(pixels), "PNG")
    save("34_0_2_20170101000000005.jpg.chip.jpg", Image.fromarray(pixels).convert("L"), "JPEG")
    save("35_0_3_20170101000000006.jpg.chip.jpg",
         Image.new("RGB", (40, 40), (200, 30, 30)).convert("CMYK"), "JPEG")
    save("36_1_3_20170101000000007.jpg.chip.jpg", Image.fromarray(pixels).convert("RGBA"), "PNG")
    write("53__0_20170116184028385.jpg.chip.jpg", data, names.REASON_EMPTY_FIELD)
    write("README.txt", b"UTKFace\n", names.REASON_NOT_IMAGE_NAME)
    os.symlink(root / "gone.jpg", root / "37_0_0_20170101000000008.jpg")
    expected["37_0_0_20170101000000008.jpg"] = image_files.REASON_UNREADABLE
    os.mkfifo(root / "38_0_0_20170101000000009.jpg")  # reading it would block forever
    expected["38_0_0_20170101000000009.jpg"] = image_files.REASON_NOT_REGULAR
    (root / "part_2").mkdir()
    (root / "part_2" / good[1]).write_bytes(data)  # a second file with an already-seen name
    return expected, good, data


@pytest.mark.parametrize("workers", [1, 2])  # in this process, and through the worker pool
def test_bad_inputs_are_skipped_with_reasons_or_repaired(faces_dir, tmp_path, workers):
    expected, good, original = _write_bad_inputs(faces_dir, tmp_path / "in")
    report = conversion.convert(_config([tmp_path / "in"], tmp_path / "out",
                                       split_ratios=(1.0, 0.0, 0.0), workers=workers))

    skipped = {os.path.relpath(item["path"], tmp_path / "in"): item["reason"]
               for item in report["skipped"]}
    wanted_skips = {name: outcome for name, outcome in expected.items() if outcome != "kept"}
    wanted_skips[os.path.join("part_2", good[1])] = conversion.REASON_DUPLICATE
    assert skipped == wanted_skips
    assert sum(report["skipped_by_reason"].values()) == len(wanted_skips)

    records = _read_split(str(tmp_path / "out"), "train")
    assert set(records) == {name for name, outcome in expected.items() if outcome == "kept"}
    assert records[good[0]]["image"] == original  # a valid RGB JPEG passes through untouched
    for name, record in records.items():
        assert record["image"][:2] == b"\xff\xd8"
        decoded = tf.io.decode_jpeg(record["image"], channels=0)  # as stored, not forced to RGB
        assert decoded.shape[-1] == 3, name
    cmyk = tf.io.decode_jpeg(records["35_0_3_20170101000000006.jpg.chip.jpg"]["image"]).numpy()
    np.testing.assert_allclose(cmyk.reshape(-1, 3).mean(0), (200, 30, 30), atol=12)


# Every odd name of the real UTKFace's aligned set, exactly as spelled there, with its labels.
REAL_ODD_NAMES = {
    "39_1_20170116174525125.jpg.chip.jpg": ((39, 1, names.UNKNOWN_RACE), names.NOTE_NO_RACE),
    "61_1_20170109142408075.jpg.chip.jpg": ((61, 1, names.UNKNOWN_RACE), names.NOTE_NO_RACE),
    "61_1_20170109150557335.jpg.chip.jpg": ((61, 1, names.UNKNOWN_RACE), names.NOTE_NO_RACE),
    "55_0_0_20170116232725357jpg.chip.jpg": ((55, 0, 0), names.NOTE_NO_DOT),
    "24_0_1_20170116220224657 .jpg.chip.jpg": ((24, 0, 1), names.NOTE_SPACE),
    "14_0_0_2017011022340900.jpg.chip.jpg": ((14, 0, 0), names.NOTE_DATETIME_DIGITS),
    "28_1_2_201701161846515488.jpg.chip.jpg": ((28, 1, 2), names.NOTE_DATETIME_DIGITS),
    "38_0_1_201701162330572788.jpg.chip.jpg": ((38, 0, 1), names.NOTE_DATETIME_DIGITS),
}


def test_real_odd_names_are_kept_with_their_labels_and_listed_with_a_note(faces_dir, tmp_path):
    folder = tmp_path / "in"
    good = _copy_faces(faces_dir, folder, 0, 2)
    rng = np.random.default_rng(0)
    for file_name, ((age, gender, race), _) in REAL_ODD_NAMES.items():
        pixels = synthetic.render_face(age, gender, max(race, 0), rng, size=40)
        Image.fromarray(pixels).save(folder / file_name, format="JPEG")
    report = conversion.convert(_config([folder], tmp_path / "out", split_ratios=(1.0, 0.0, 0.0)))

    assert report["total_skipped"] == 0
    records = _read_split(str(tmp_path / "out"), "train")
    assert set(records) == set(REAL_ODD_NAMES) | set(good)
    for file_name, (expected, _) in REAL_ODD_NAMES.items():
        record = records[file_name]
        assert (record["age"], record["gender"], record["race"]) == expected, file_name
    wanted = {}
    for file_name, (_, note) in sorted(REAL_ODD_NAMES.items()):
        wanted.setdefault(note, []).append(file_name)
    assert report["kept_with_notes"] == {
        note: {"count": len(wanted[note]), "files": wanted[note]} for note in names.NOTES}
    summary = conversion_report.summarize(report)
    assert "kept with a note: 3 x race unknown: the name has no race field" in summary


def test_a_split_without_records_gets_no_shards_and_tfds_still_loads(faces_dir, tmp_path):
    import tensorflow_datasets as tfds

    _copy_faces(faces_dir, tmp_path / "in", 0, 3)
    report = conversion.convert(_config([tmp_path / "in"], tmp_path / "out", min_shards=4,
                                       split_ratios=(1.0, 0.0, 0.0)))
    assert report["counts"] == {"train": 3, "validation": 0, "test": 0}
    # never more than records
    assert report["settings"]["shards"] == {"train": 3, "validation": 0, "test": 0}
    builder = tfds.builder_from_directory(str(tmp_path / "out"))
    assert set(builder.info.splits) == {"train"}
    assert sum(1 for _ in builder.as_dataset(split="train")) == 3


def test_refuses_a_non_empty_output_without_overwrite(faces_dir, tmp_path):
    _copy_faces(faces_dir, tmp_path / "in", 0, 4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    stale = out / "old-train.tfrecord-00000-of-00001"
    stale.write_bytes(b"stale")
    with pytest.raises(convert_config.ConversionError, match="--overwrite") as info:
        conversion.convert(_config([tmp_path / "in"], out))
    assert "\n" not in str(info.value)
    assert sorted(os.listdir(out)) == ["notes.md", stale.name]
    conversion.convert(_config([tmp_path / "in"], out, overwrite=True))
    assert not stale.exists()  # another dataset's shards would be globbed with this one's
    assert (out / "notes.md").read_text() == "mine"


@pytest.mark.parametrize("settings, message", [
    ({"split_ratios": (0.5, 0.5)}, "split ratios"),
    ({"split_ratios": (0.8, 0.3, -0.1)}, "split ratios"),
    ({"split_ratios": (0.0, 0.5, 0.5)}, "split ratios"),
    ({"min_shards": 0}, "--min_shards"),
    ({"num_shards": 0}, "--num_shards"),
    ({"age_deviation": 0.0}, "--age_deviation"),
    ({"dataset_name": "my-faces"}, "--dataset_name"),
    ({"dataset_name": "1faces"}, "--dataset_name"),
    ({"workers": 0}, "--workers"),
    ({"input_dirs": ["/nonexistent/faces"]}, "does not exist"),
    ({"input_dirs": ["EMPTY"]}, "holds no files"),
    ({"input_dirs": ["ONLY_BAD"]}, "no usable training image"),
])
def test_bad_settings_fail_in_one_line_and_write_nothing(faces_dir, tmp_path, settings, message):
    (tmp_path / "EMPTY" / "sub").mkdir(parents=True)
    (tmp_path / "ONLY_BAD").mkdir()
    (tmp_path / "ONLY_BAD" / "notes.txt").write_text("x")
    (tmp_path / "ONLY_BAD" / "25_0_0_20170101000000001.jpg").write_bytes(b"")
    input_dirs = [str(tmp_path / d) if d in ("EMPTY", "ONLY_BAD") else d
                  for d in settings.pop("input_dirs", [faces_dir])]
    with pytest.raises(convert_config.ConversionError, match=message) as info:
        conversion.convert(_config(input_dirs, tmp_path / "out", **settings))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_parse_split_ratios():
    assert convert_config.parse_split_ratios("0.7, 0.2,0.1") == (0.7, 0.2, 0.1)
    with pytest.raises(convert_config.ConversionError, match="--split_ratios"):
        convert_config.parse_split_ratios("0.8;0.1;0.1")


def test_interrupted_conversion_leaves_no_partial_shard_and_overwrite_redoes_it(
        faces_dir, tmp_path, monkeypatch):
    _copy_faces(faces_dir, tmp_path / "in", 0, 30)
    out = tmp_path / "out"
    encode, written = record_encoder.encode_example_pieces, []

    def interrupt_after_five(**kwargs):
        if len(written) == 5:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of the first train shard
        written.append(kwargs["filename"])
        return encode(**kwargs)

    monkeypatch.setattr(record_encoder, "encode_example_pieces", interrupt_after_five)
    with pytest.raises(KeyboardInterrupt):
        conversion.convert(_config([tmp_path / "in"], out, min_shards=2))
    monkeypatch.undo()
    # the partial shard has no final name
    assert not tf.io.gfile.glob(dataset_files.shard_pattern(str(out), "*"))
    assert not (out / "dataset_info.json").exists()

    with pytest.raises(convert_config.ConversionError, match="--overwrite"):
        conversion.convert(_config([tmp_path / "in"], out, min_shards=2))
    report = conversion.convert(_config([tmp_path / "in"], out, min_shards=2, overwrite=True))
    assert not (out / folder_swap.INCOMPLETE_DIR).exists()
    assert (sum(len(_read_split(str(out), split)) for split in dataset_files.SPLITS)
            == report["total_kept"] == 30)


def test_the_report_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    config = _config([str(tmp_path / "in")], tmp_path)
    lengths = {"train": [3, 2], "validation": [1], "test": []}
    (tmp_path / dataset_files.REPORT_FILE).write_text("the old report")

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", no_space)  # the write fails after the data, before the rename
        with pytest.raises(OSError, match="No space left"):
            conversion_report.write_report(config, lengths, [], start=0.0)
    assert (tmp_path / dataset_files.REPORT_FILE).read_text() == "the old report"
    assert sorted(os.listdir(tmp_path)) == [dataset_files.REPORT_FILE]  # no temporary file left
    report = conversion_report.write_report(config, lengths, [], start=0.0)
    assert _report(str(tmp_path)) == report and report["counts"]["train"] == 5


def test_framed_records_are_what_tfrecordwriter_writes_and_read_back(tmp_path):
    # Lengths around the varint and CRC edges, an empty record, and a face-sized one.
    records = [b"", b"a", bytes(range(256)) * 3, os.urandom(10_000), b"\xff" * 127]
    written = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(written)) as writer:
        for record in records:
            writer.write(record)
    framed = b"".join(shard_writer.frame_record(record) for record in records)
    assert framed == written.read_bytes()
    ours = tmp_path / "ours.tfrecord"
    ours.write_bytes(framed)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == records
    # A flipped bit in a record fails TensorFlow's check of its CRC, so the CRC is one.
    flipped = bytearray(framed)
    third = (16 + 0) + (16 + 1)  # 16 bytes of framing a record, after the first two records
    flipped[third + 12 + 100] ^= 1  # past its length and CRC, inside its bytes
    ours.write_bytes(bytes(flipped))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(ours)))


def test_count_shards():
    config = convert_config.ConvertConfig(input_dirs=[], output_dir="", min_shards=4,
                                          shard_bytes=100)
    assert shard_writer.count_shards(0, 0, config) == 0
    assert shard_writer.count_shards(1000, 150, config) == 4      # at least min_shards
    assert shard_writer.count_shards(1000, 1001, config) == 11    # about shard_bytes each
    assert shard_writer.count_shards(3, 10**6, config) == 3       # never more shards than records
    fixed = convert_config.ConvertConfig(input_dirs=[], output_dir="", num_shards=7,
                                         shard_bytes=100)
    assert shard_writer.count_shards(1000, 10**6, fixed) == 7


def test_assign_split_is_stable_and_follows_the_ratios():
    file_names = [f"{i % 90}_{i % 2}_0_2017010100{i:07d}.jpg.chip.jpg" for i in range(20000)]
    splits = [split_files.assign_split(name, (0.8, 0.1, 0.1)) for name in file_names]
    assert splits == [split_files.assign_split(name, (0.8, 0.1, 0.1)) for name in file_names]
    shares = {split: splits.count(split) / len(splits) for split in dataset_files.SPLITS}
    assert shares["train"] == pytest.approx(0.8, abs=0.015)
    assert shares["validation"] == pytest.approx(0.1, abs=0.01)
    assert {split_files.assign_split(name, (1.0, 0.0, 0.0))
            for name in file_names[:500]} == {"train"}


def _run_script(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_tfrecords"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


def test_script_fails_in_one_line_on_a_missing_input_dir_or_bad_flag(tmp_path):
    out = tmp_path / "out"
    result = _run_script("--input_dir", str(tmp_path / "missing"), "--output_dir", str(out))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"make_tfrecords: error: input directory {tmp_path / 'missing'} does not exist; "
        "check --input_dir")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jpg").write_bytes(b"")
    result = _run_script("--input_dir", str(tmp_path / "in"), "--output_dir", str(out),
                         "--split_ratios", "0.9,0.2")
    assert result.returncode != 0 and "--split_ratios" in result.stderr.strip().splitlines()[-1]
    assert not out.exists()


@pytest.mark.slow
def test_script_writes_a_split_file_and_reads_it_back(tmp_path):
    faces = tmp_path / "faces"
    synthetic.write_synthetic_faces(str(faces), count=12, seed=5, size=40)
    first = _run_script("--input_dir", str(faces), "--output_dir", str(tmp_path / "a"),
                        "--write_split_file", "--workers=1", "--noprogress")
    assert first.returncode == 0, first.stderr
    written = (tmp_path / "a" / "splits.csv").read_text()
    # Another ratio would move files; the split file keeps every one where it was.
    again = _run_script("--input_dir", str(faces), "--output_dir", str(tmp_path / "b"),
                        "--split_file", str(tmp_path / "a" / "splits.csv"),
                        "--split_ratios=0.34,0.33,0.33", "--write_split_file", "--workers=1",
                        "--noprogress")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "b" / "splits.csv").read_text() == written
    assert len(written.splitlines()) == 13


@pytest.mark.parametrize("age, race, file_name", [(0, names.UNKNOWN_RACE, "0_1_7.jpg"),
                                                   (37, 2, "37_0_2_20170101000000001.jpg.chip.jpg"),
                                                   (116, 4, "116_1_4_ünïcode.jpg")])
def test_records_built_without_tensorflow_equal_the_schemas(age, race, file_name):
    entries = record_encoder.label_entries([age, 5], age_deviation=3.5)
    fields = dict(jpeg=bytes(range(256)) * 40, gender=1, race=race, filename=file_name,
                  height=200, width=180)
    ours = record_encoder.encode_example(age_entries=entries[age], **fields)
    theirs = schema.make_example(age=age, age_deviation=3.5, **fields)
    assert tf.train.Example.FromString(ours) == tf.train.Example.FromString(theirs)


def _decodes_at_full_size(data):
    try:
        Image.open(io.BytesIO(data)).load()
    except Exception:
        return False
    return True


def test_the_reduced_scale_check_rejects_what_a_full_size_decode_rejects(faces_dir, tmp_path):
    # check_image decodes RGB JPEGs at 1/8 scale; libjpeg must still read every coefficient.
    source = os.path.join(faces_dir, sorted(os.listdir(faces_dir))[0])
    data = open(source, "rb").read()
    progressive = io.BytesIO()
    Image.open(source).save(progressive, format="JPEG", progressive=True)
    rng = np.random.default_rng(0)
    damaged = []
    for original in (data, progressive.getvalue()):
        damaged += [original[:cut] for cut in range(200, len(original), len(original) // 60)]
        for position in rng.integers(0, len(original), 60):
            flipped = bytearray(original)
            flipped[position] ^= 0x10
            damaged.append(bytes(flipped))
    path = tmp_path / "face.jpg"
    verdicts = []
    for content in damaged:
        path.write_bytes(content)
        reason = conversion_workers.check_image(str(path))[0]
        assert (reason is None) == _decodes_at_full_size(content)
        verdicts.append(reason)
    assert verdicts.count(image_files.REASON_TRUNCATED) > 100  # the cuts did break the files


def test_workers_hold_a_bounded_number_of_images_whatever_the_dataset_size(faces_dir):
    candidates, _ = conversion.collect_candidates(conversion.list_files([faces_dir]),
                                                  (1.0, 0.0, 0.0))
    candidates *= 6  # more than max_in_flight, so a queue of every task would show
    entries = record_encoder.label_entries([c.labels.age for c in candidates], 5.0)
    taken = 0

    def lazily():
        nonlocal taken
        for candidate in candidates:
            taken += 1
            yield candidate

    bound = conversion_workers.max_in_flight(2)
    assert len(candidates) > 2 * bound
    results = conversion_workers.encode_all(lazily(), entries, workers=2)
    for written, (reason, height, width, record) in enumerate(results, start=1):
        assert reason is None and (height, width) == (200, 200) and record
        assert taken - written <= bound
    assert written == taken == len(candidates)


def test_skipped_images_leave_no_empty_shard(faces_dir, tmp_path):
    names_in = _copy_faces(faces_dir, tmp_path / "in", 0, 3)
    (tmp_path / "in" / names_in[1]).write_bytes(b"")
    report = conversion.convert(_config([tmp_path / "in"], tmp_path / "out", min_shards=3,
                                       split_ratios=(1.0, 0.0, 0.0)))
    assert report["settings"]["shard_lengths"]["train"] == [1, 1]
    shards = sorted(os.listdir(tmp_path / "out"))
    assert [name for name in shards if "tfrecord" in name] == [
        "faces-train.tfrecord-00000-of-00002", "faces-train.tfrecord-00001-of-00002"]
    assert set(_read_split(str(tmp_path / "out"), "train")) == {names_in[0], names_in[2]}


def test_a_failed_overwrite_keeps_the_previous_dataset(faces_dir, tmp_path):
    _copy_faces(faces_dir, tmp_path / "in", 0, 20)
    out = tmp_path / "out"
    conversion.convert(_config([tmp_path / "in"], out))
    before = sorted(os.listdir(out))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "25_0_0_20170101000000001.jpg").write_bytes(b"")
    with pytest.raises(convert_config.ConversionError, match="no usable training image"):
        conversion.convert(_config([tmp_path / "bad"], out, overwrite=True))
    assert sorted(os.listdir(out)) == before
    assert sum(len(_read_split(str(out), split)) for split in dataset_files.SPLITS) == 20


def test_worker_processes_import_no_tensorflow():
    # Spawned workers import the entry point and agetf.data.conversion; TensorFlow in each would
    # cost seconds and hundreds of MiB per worker.
    code = ("import sys, agetf.convert, agetf.data.conversion; "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
