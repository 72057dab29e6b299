"""Hostile input: broken shards, bad flagfiles and flag values, unwritable or mismatched model_dirs,
and model loading that cannot run code from a file.
"""

import ast
import glob
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from agetf import train
from agetf.data import dataset_files, input_pipeline, record_audit
from agetf.modeling.model_config import ModelConfig
from agetf.training import checkpoints, train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def damaged_copy(data_dir, tmp_path, how):
    directory = str(tmp_path / "damaged")
    shutil.copytree(data_dir, directory)
    path = input_pipeline.list_shards(directory, "train")[1]
    data = bytearray(open(path, "rb").read())
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF  # a flipped bit inside a record: its checksum fails
    open(path, "wb").write(bytes(data))
    return directory, path


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_broken_shard_is_named_in_a_one_line_error(data_dir, tmp_path, how):
    directory, path = damaged_copy(data_dir, tmp_path, how)
    assert [p for p, _ in input_pipeline.find_corrupt_shards(
        input_pipeline.list_shards(directory, "train"))] == [path]
    message = str(input_pipeline.corrupt_data_error(directory))
    assert path in message and "--skip_corrupt_records" in message and "\n" not in message


def run_cli(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "agetf.train", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)


def complete_records(path):
    """Records whose whole TFRecord frame (length, CRC, data, CRC) is in the file, by hand."""
    data, offset, count = open(path, "rb").read(), 0, 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        offset += 12 + length + 4
        count += offset <= len(data)
    return count


def test_the_record_audit_finds_nothing_lost_in_an_intact_split_and_names_a_broken_file(
        data_dir, tmp_path):
    report = json.load(open(os.path.join(data_dir, dataset_files.REPORT_FILE)))
    intact = record_audit.audit_split(data_dir, "train")
    assert ((intact.readable, intact.expected, intact.lost)
            == (report["counts"]["train"],) * 2 + ({},))
    assert "all" in intact.describe() and "readable" in intact.describe()
    directory, path = damaged_copy(data_dir, tmp_path, "flip")
    audit = record_audit.audit_split(directory, "train")
    assert list(audit.lost) == [path] and audit.skipped >= 1
    assert audit.readable + audit.skipped == report["counts"]["train"]


@pytest.mark.slow
def test_skip_corrupt_records_counts_what_a_truncated_shard_loses_and_training_completes(
        data_dir, tmp_path):
    directory, path = damaged_copy(data_dir, tmp_path, "truncate")
    report = json.load(open(os.path.join(directory, dataset_files.REPORT_FILE)))
    index = input_pipeline.list_shards(directory, "train").index(path)
    lost = report["settings"]["shard_lengths"]["train"][index] - complete_records(path)
    assert lost > 0
    model_dir = tmp_path / "run"
    result = run_cli(f"--data_dir={directory}", f"--model_dir={model_dir}",
                     "--skip_corrupt_records",
                     "--img_dim=32", "--alpha=0.35", "--weights=none", "--batch_size=16",
                     "--epochs=1",
                     "--steps_per_epoch=2", "--steps_per_loop=2", "--noexport",
                     "--summary_images=0", "--print_predictions=0", "--mixed_precision=float32",
                     "--strategy=default", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    total = report["counts"]["train"]
    assert (f"skipping {lost:,} unreadable records of {total:,} in train ({path}: {lost})"
            in output), output[-3000:]
    assert f"all {report['counts']['validation']:,} validation records are readable" in output
    assert json.load(open(model_dir / "evaluation.json"))["skipped_records"] == 0
    assert (model_dir / "final.keras").exists()
    assert json.load(open(model_dir / "history.json"))["epoch"] == [1]
    for split, expected in (("train", lost), ("validation", 0)):
        events = event_accumulator.EventAccumulator(str(model_dir / "logs" / split),
                                                    size_guidance={"tensors": 0})
        events.Reload()
        values = [float(tf.make_ndarray(e.tensor_proto))
                  for e in events.Tensors("data/skipped_records")]
        assert values == [expected], (split, values)


@pytest.mark.parametrize("make_args,expected", [
    (lambda d, tmp: [f"--flagfile={tmp / 'missing.flags'}"], "missing.flags"),
    (lambda d, tmp: [f"--data_dir={d}", f"--model_dir={tmp / 'run'}", "--weights=none",
                     "--img_dim=big"],
     "--img_dim"),
    (lambda d, tmp: [f"--flagfile={tmp / 'bad.flags'}"], "img_dim"),
])
def test_bad_flagfiles_and_flag_values_fail_in_one_line_before_writing(data_dir, tmp_path,
                                                                       make_args, expected):
    (tmp_path / "bad.flags").write_text(f"--data_dir={data_dir}\n--img_dim=12.5.3\n")
    result = run_cli(*make_args(data_dir, tmp_path))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and expected in errors[0], result.stderr
    assert not (tmp_path / "run").exists()


def test_a_model_dir_that_cannot_be_written_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(train.UsageError, match="cannot be created") as error:
        train_lib.ensure_writable_dir(str(blocker / "run"))
    assert "\n" not in str(error.value)
    assert blocker.read_text() == "not a folder"


def test_resuming_with_another_img_dim_is_refused_and_nothing_is_overwritten(tmp_path):
    model_dir = str(tmp_path / "run")
    os.makedirs(model_dir)
    checkpoints.write_run_definition(model_dir, ModelConfig(img_dim=32, alpha=0.35))
    before = open(os.path.join(model_dir, "run.json")).read()
    with pytest.raises(ValueError, match="img_dim: 32 in model_dir, 64 now") as error:
        checkpoints.check_run_definition(model_dir, ModelConfig(img_dim=64, alpha=0.35))
    assert "\n" not in str(error.value)
    assert open(os.path.join(model_dir, "run.json")).read() == before


def _calls(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) == name
                 or getattr(node.func, "id", None) == name)]


def test_models_load_in_keras_safe_mode_and_nothing_unpickles():
    sources = (glob.glob(os.path.join(REPO, "agetf", "*.py"))
               + glob.glob(os.path.join(REPO, "scripts", "*")))
    loads = 0
    for path in filter(os.path.isfile, sources):  # not scripts/__pycache__
        text = open(path, encoding="utf-8").read()
        if not path.endswith(".py") and "python" not in text.split("\n", 1)[0]:
            continue  # a shell script
        tree = ast.parse(text, path)
        for call in _calls(tree, "load_model"):
            loads += 1
            safe = [k for k in call.keywords if k.arg == "safe_mode"]
            assert safe and getattr(safe[0].value, "value", None) is True, f"{path}:{call.lineno}"
        assert not _calls(tree, "load") or "pickle" not in text, path
        assert "import pickle" not in text and "allow_pickle=True" not in text, path
    assert loads >= 1


# --- agetf.predict given what is not an agetf export, or not a photo -----------------------

def run_predict(*args, timeout=180):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "agetf.predict", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)


def printed_blocks(stdout):
    """{file name: [the lines printed under each `Predicting for image PATH`]}."""
    blocks = {}
    for block in stdout.split("Predicting for image ")[1:]:
        lines = block.split("\nImages: ")[0].splitlines()  # the summary ends the last one
        blocks.setdefault(os.path.basename(lines[0]), []).append(lines[1:])
    return blocks


@pytest.fixture(scope="module")
def foreign_models(tmp_path_factory):
    """SavedModels and TFLite files of other models: no signatures, a serving_default of
    another input, one taking images_bytes (and uint8 images) with other outputs."""
    folder = tmp_path_factory.mktemp("foreign")
    bare = tf.Module()
    bare.scale = tf.Variable(2.0)
    tf.saved_model.save(bare, str(folder / "no_signatures"))
    plain = tf.Module()
    plain.scale = tf.Variable(2.0)
    plain.double = tf.function(lambda x: plain.scale * x,
                               input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    tf.saved_model.save(plain, str(folder / "other_input"))  # its one function: serving_default
    outputs = tf.Module()
    outputs.bytes = tf.function(lambda images_bytes: {"logits": tf.strings.length(images_bytes)},
                                input_signature=[tf.TensorSpec([None], tf.string,
                                                               name="images_bytes")])
    outputs.images = tf.function(lambda images: {"logits": tf.reduce_mean(
        tf.cast(images, tf.float32), [1, 2, 3])}, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    tf.saved_model.save(outputs, str(folder / "other_outputs"), signatures={
        "serving_default": outputs.bytes, "serving_images": outputs.images})
    models = {name: str(folder / name) for name in ("no_signatures", "other_input",
                                                     "other_outputs")}
    for name, spec, function in [
            ("other_input.tflite", tf.TensorSpec([1, 4], tf.float32, name="x"),
             lambda x: {"y": 2.0 * x}),
            ("other_outputs.tflite", tf.TensorSpec([1, 8, 8, 3], tf.uint8, name="images"),
             lambda images: {"logits": tf.reduce_mean(tf.cast(images, tf.float32), [1, 2, 3])})]:
        module = tf.Module()
        module.serve = tf.function(function, input_signature=[spec])
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [module.serve.get_concrete_function()], module)
        (folder / name).write_bytes(converter.convert())
        models[name] = str(folder / name)
    return models


@pytest.mark.parametrize("name", ["no_signatures", "other_input", "other_outputs"])
def test_a_foreign_saved_model_is_one_line_naming_what_was_expected_and_what_it_has(
        foreign_models, name):
    from agetf.serving import predictors

    path = foreign_models[name]
    for load, signature, expected in [
            (predictors.load_predictor, "serving_default", "images_bytes"),
            (predictors.load_image_predictor, "serving_images", "images")]:
        with pytest.raises(predictors.SavedModelError) as error:
            load(path)
        message = str(error.value)
        assert "\n" not in message and len(message) < 600, message
        assert message.startswith(f"{path} is not an agetf export: it has signatures "), message
        assert f"'{signature}' taking {expected}" in message, message
        assert "python -m agetf.train --load" in message, message
        has = {"no_signatures": "it has signatures [] without",
               "other_input": "[serving_default taking x (float32 [None, 4]) giving output_0]",
               "other_outputs": "[serving_default taking images_bytes (string [None]) giving "
                                "logits, serving_images taking images (uint8 [None, None, None, "
                                "3]) giving logits]"}[name]
        assert has in message, message


@pytest.mark.parametrize("name", ["other_input.tflite", "other_outputs.tflite"])
def test_a_foreign_tflite_file_is_one_line(foreign_models, name):
    from agetf.serving import predictors

    with pytest.raises(ValueError) as error:
        predictors.load_predictor(foreign_models[name])
    message = str(error.value)
    assert "\n" not in message and message.startswith(foreign_models[name]), message
    assert "agetf.train --load --export_tflite" in message, message


@pytest.mark.slow
@pytest.mark.parametrize("detect", [False, True], ids=["crops", "detect_faces"])
def test_the_command_with_a_foreign_saved_model_prints_one_line_and_no_image_bytes(
        foreign_models, faces_dir, detect):
    image = os.path.join(faces_dir, sorted(os.listdir(faces_dir))[0])
    result = run_predict(f"--saved_model={foreign_models['other_input']}",
                         *(["--detect_faces"] if detect else []), image)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr) < 2000, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"agetf.predict: error: {foreign_models['other_input']} is not an agetf export")


@pytest.mark.slow
@pytest.mark.parametrize("detect", [False, True], ids=["crops", "detect_faces"])
def test_only_regular_files_are_read_and_the_rest_of_the_folder_is_predicted(
        tiny_export, faces_dir, tmp_path, detect):
    """A FIFO would block the read forever and /dev/zero never ends: each is an error line.
    A regular file over the size cap (sparse, so cheap) is not read either."""
    folder = tmp_path / "photos"
    folder.mkdir()
    faces = sorted(os.listdir(faces_dir))
    shutil.copy(os.path.join(faces_dir, faces[0]), folder / "a.jpg")
    os.mkfifo(folder / "x.jpg")
    os.symlink("/dev/zero", folder / "y.jpg")
    shutil.copy(os.path.join(faces_dir, faces[1]), folder / "z.jpg")
    with open(folder / "huge.jpg", "wb") as f:
        f.truncate(1_000_000_000)
    result = run_predict(f"--saved_model={tiny_export.saved_model}",
                         *(["--detect_faces"] if detect else []), str(folder),
                         str(folder / "x.jpg"), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    blocks = printed_blocks(result.stdout)
    assert sorted(blocks) == ["a.jpg", "huge.jpg", "x.jpg", "y.jpg", "z.jpg"], result.stdout
    assert blocks["x.jpg"] == [[f"Error: {folder / 'x.jpg'} is not a regular file (a FIFO), "
                                "not read"]] * 2
    assert blocks["y.jpg"] == [[f"Error: {folder / 'y.jpg'} is not a regular file (a character "
                                "device), not read"]]
    assert blocks["huge.jpg"] == [[f"Error: {folder / 'huge.jpg'} is 1000.0 MB, more than the "
                                   "128 MB an image file may have (--max_file_mb), not read"]]
    for name in ("a.jpg", "z.jpg"):
        (lines,) = blocks[name]
        assert not lines[0].startswith("Error"), (name, lines)
    assert "Images: 6, unreadable: 4" in result.stdout


def write_flat_jpeg(path, width, height, colour=(120, 90, 60)):
    """A flat-colour JPEG of width x height (multiples of 16) written without ever holding its
    pixels: one strip encoded with a restart marker after each row of blocks, whose interval
    (the same for every row, as each restart resets the DC prediction) is repeated."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, 32), colour).save(buffer, "JPEG", quality=90, subsampling=2,
                                               restart_marker_rows=1)
    data = buffer.getvalue()
    frame, scan = data.index(b"\xff\xc0"), data.index(b"\xff\xda")
    scan += 2 + struct.unpack(">H", data[scan + 2:scan + 4])[0]
    interval = data[scan:data.index(b"\xff\xd0", scan)]
    assert data[scan + len(interval) + 2:].startswith(interval)  # rows are encoded alike
    header = bytearray(data[:scan])
    header[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    rows = height // 16
    with open(path, "wb") as f:
        f.write(header)
        for row in range(rows):
            f.write(interval + (bytes([0xFF, 0xD0 + row % 8]) if row < rows - 1 else b""))
        f.write(b"\xff\xd9")


def write_flat_png(path, width, height, colour=(120, 90, 60)):
    """A flat-colour RGB PNG of width x height, compressed one row at a time."""
    import zlib

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    row, compressor = b"\x00" + bytes(colour) * width, zlib.compressobj()
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n"
                + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def run_measuring_memory(args, timeout):
    """(exit code, stdout, peak resident bytes) of a child process, killed after timeout s."""
    import tempfile
    import threading

    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        killer = threading.Timer(timeout, child.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)  # the child's own rusage, not all children's
        finally:
            killer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return child.returncode, out.read().decode(), usage.ru_maxrss * 1024  # KiB on Linux


@pytest.fixture(scope="module")
def huge_photos(tmp_path_factory):
    """The issue's two: a 12000x12000 JPEG (2.2 MB) and a 13000x13000 PNG (0.5 MB)."""
    folder = tmp_path_factory.mktemp("huge_photos")
    write_flat_jpeg(folder / "wide.jpg", 12000, 12000)
    write_flat_png(folder / "huge.png", 13000, 13000)
    return folder


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_the_flat_photos_are_what_they_claim_to_be(huge_photos):
    from PIL import Image

    with Image.open(huge_photos / "wide.jpg") as image:
        image.draft("RGB", (1500, 1500))
        assert image.size == (1500, 1500)
        assert image.getextrema() == ((120, 120), (91, 91), (61, 61))  # JPEG's rounding
    with Image.open(huge_photos / "huge.png") as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (13000, 13000))


@pytest.mark.slow
@pytest.mark.parametrize("detect", [False, True], ids=["crops", "detect_faces"])
def test_huge_photos_take_under_2_gb_and_each_gets_its_lines(tiny_export, huge_photos, detect):
    """The JPEG is decoded at reduced scale (by the model on the crop path, by Pillow's DCT
    scaling for detection); the PNG has more pixels than --max_pixels and is refused from
    its header."""
    code, output, peak = run_measuring_memory(
        [sys.executable, "-m", "agetf.predict", f"--saved_model={tiny_export.saved_model}",
         *(["--detect_faces"] if detect else []), str(huge_photos)], timeout=300)
    assert code == 0, output[-3000:]
    blocks = printed_blocks(output)
    assert sorted(blocks) == ["huge.png", "wide.jpg"], output[-3000:]
    assert blocks["huge.png"] == [[
        f"Error: {huge_photos / 'huge.png'} has 13000x13000 pixels (169.0 MP), more than the "
        "40 MP an image may have (--max_pixels); only JPEGs are decoded at reduced scale"]]
    (wide,) = blocks["wide.jpg"]
    assert wide == ["No face found"] if detect else wide[0].startswith("Predicted age: "), wide
    assert peak < 2e9, f"peak resident memory {peak / 1e9:.2f} GB"
