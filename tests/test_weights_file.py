"""--weights=PATH: a backbone weights file loads as saved; one that cannot fit is one line."""

import os
import pathlib
import subprocess
import sys

import h5py
import numpy as np
import pytest

from agetf import UsageError
from agetf.modeling import model as model_lib
from agetf.modeling import model_config, weights_file
from agetf.modeling.model_config import ModelConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMG_DIM = 32


def tiny_model(alpha=0.35, backbone="MobileNetV2", weights="none"):
    return model_lib.build_model(backbone=backbone, img_dim=IMG_DIM, heads=["age"], alpha=alpha,
                                 weights=weights)


def run_module(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=env)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Backbone weights files of MobileNetV2 x0.35 and x0.5, in both layouts Keras reads, with
    random values (not a fresh model's); a whole model's save_weights; ResNet50's."""
    from keras.src.legacy.saving import legacy_h5_format

    out = tmp_path_factory.mktemp("weights")
    rng = np.random.default_rng(5)
    paths = {}
    for alpha in (0.35, 0.5):
        model = tiny_model(alpha)
        backbone = model.get_layer("backbone")
        backbone.set_weights([rng.normal(size=w.shape).astype("float32")
                              for w in backbone.get_weights()])
        paths[alpha] = str(out / f"mobilenet_v2_{alpha}.weights.h5")
        backbone.save_weights(paths[alpha])
        paths[alpha, "legacy"] = str(out / f"mobilenet_v2_{alpha}_no_top.h5")
        with h5py.File(paths[alpha, "legacy"], "w") as f:  # keras.applications' layout
            legacy_h5_format.save_weights_to_hdf5_group(f, backbone)
        paths[alpha, "saved"] = backbone.get_weights()
    paths["whole"] = str(out / "whole_model.weights.h5")
    model.save_weights(paths["whole"])
    paths["ResNet50"] = str(out / "resnet50.weights.h5")
    tiny_model(1.0, "ResNet50").get_layer("backbone").save_weights(paths["ResNet50"])
    return paths


def one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("layout", ["keras_3", "legacy"])
def test_a_good_file_loads_as_saved(files, layout):
    path = files[0.35] if layout == "keras_3" else files[0.35, "legacy"]
    backbone = tiny_model(weights=path).get_layer("backbone")
    loaded = backbone.get_weights()
    assert len(loaded) == len(files[0.35, "saved"])
    for ours, saved in zip(loaded, files[0.35, "saved"]):
        np.testing.assert_array_equal(ours, saved)
    with h5py.File(path, "r") as f:  # and the file holds those arrays
        kernel = f["layers/conv2d/vars/0"] if layout == "keras_3" else f["Conv1/Conv1/kernel"]
        np.testing.assert_array_equal(backbone.get_layer("Conv1").kernel.numpy(), kernel[()])


@pytest.mark.parametrize("layout,where", [
    ("keras_3", "its layers/conv2d_3 (this backbone's block_1_project) holds a kernel"),
    ("legacy", "its layer block_1_project holds a kernel"),
])
def test_a_file_of_another_width_names_both_widths_and_the_layer(files, recwarn, layout, where):
    path = files[0.5] if layout == "keras_3" else files[0.5, "legacy"]
    with pytest.raises(UsageError) as error:
        tiny_model(alpha=0.35, weights=path)
    assert one_line(error) == (
        f"weights file {path} holds MobileNetV2 alpha=0.5 weights, not MobileNetV2 alpha=0.35: "
        f"{where} of shape (1, 1, 48, 16) where this backbone has (1, 1, 48, 8); pass "
        "--base_model=MobileNetV2 --alpha=0.5, or a weights file for MobileNetV2 alpha=0.35")
    # Keras' warnings about each layer it skipped would bury the one line.
    assert not [w for w in recwarn if "Skipping" in str(w.message)]


def test_a_mobilenet_file_for_resnet50_names_both_backbones(files):
    with pytest.raises(UsageError) as error:
        tiny_model(alpha=1.0, backbone="ResNet50", weights=files[0.35])
    assert one_line(error) == (
        f"weights file {files[0.35]} holds MobileNetV2 alpha=0.35 weights, not ResNet50: its "
        "layers/conv2d (this backbone's conv1_conv) holds 1 array where this backbone has 2; "
        "pass --base_model=MobileNetV2 --alpha=0.35, or a weights file for ResNet50")


def test_a_resnet50_file_for_mobilenet_v2_names_both_backbones(files):
    with pytest.raises(UsageError) as error:
        tiny_model(alpha=0.35, weights=files["ResNet50"])
    assert one_line(error) == (
        f"weights file {files['ResNet50']} holds ResNet50 weights, not MobileNetV2 alpha=0.35: "
        "its layers/conv2d (this backbone's Conv1) holds 2 arrays where this backbone has 1; "
        "pass --base_model=ResNet50 --alpha=1.0, or a weights file for MobileNetV2 alpha=0.35")


def test_the_alpha_table_agrees_with_the_files_conv_1(files):
    for alpha in (0.35, 0.5):
        with h5py.File(files[alpha, "legacy"], "r") as f:
            kernel = f["Conv_1/Conv_1/kernel"]
            assert weights_file._MOBILENET_V2_ALPHA_BY_CHANNELS[kernel.shape[2]] == alpha


def bad_files(tmp_path, files):
    """(path, what the one line says) for each file the config refuses."""
    text = tmp_path / "weights.h5"
    text.write_text("not weights\n")
    keras_3, legacy = (pathlib.Path(files[0.35]).read_bytes(),
                       pathlib.Path(files[0.35, "legacy"]).read_bytes())
    truncated = tmp_path / "truncated.weights.h5"
    truncated.write_bytes(keras_3[:4096])
    keras_3_named_h5 = tmp_path / "keras_3.h5"
    keras_3_named_h5.write_bytes(keras_3)
    legacy_named_weights_h5 = tmp_path / "legacy.weights.h5"
    legacy_named_weights_h5.write_bytes(legacy)
    saved_model = tmp_path / "best.keras"
    saved_model.write_bytes(b"PK\x03\x04")  # a zip, as .keras files are
    return [
        (tmp_path / "missing.weights.h5", "does not exist; pass --weights=imagenet, --weights="),
        (tmp_path, "is a directory; pass --weights=imagenet, --weights=none"),
        (text, "is not a readable HDF5 file (file signature not found); pass --weights=imagenet"),
        (truncated, "is not a readable HDF5 file (truncated file: eof = 4096,"),
        (keras_3_named_h5, "Keras reads only from a name ending in .weights.h5; rename it"),
        (legacy_named_weights_h5, "only from a name ending in .h5 but not .weights.h5; rename it"),
        (files["whole"], "holds a whole model's weights; pass a backbone's, saved with "
                         "model.get_layer('backbone').save_weights('NAME.weights.h5')"),
        (saved_model, "is a whole saved model; pass a backbone's, saved with"),
    ]


def test_files_that_cannot_load_are_refused_by_the_config(tmp_path, files, monkeypatch):
    monkeypatch.setattr(model_lib, "_backbone", lambda *args: pytest.fail("model built"))
    for path, says in bad_files(tmp_path, files):
        with pytest.raises(UsageError) as error:
            ModelConfig(weights=str(path))
        assert one_line(error).startswith(f"weights file {path} ")
        assert says in str(error.value)
        with pytest.raises(UsageError, match="weights file"):  # before any model is built
            tiny_model(weights=str(path))


def test_the_config_reads_a_weights_file_without_tensorflow(tmp_path):
    text = tmp_path / "weights.h5"
    text.write_text("not weights\n")
    result = run_module("-c", f"""if True:
        import sys
        from agetf import UsageError
        from agetf.modeling.model_config import ModelConfig
        try:
            ModelConfig(weights={str(text)!r})
        except UsageError as error:
            print(error)
        print("tensorflow" in sys.modules, "h5py" in sys.modules)""")
    assert result.returncode == 0, result.stderr
    refused, modules = result.stdout.strip().splitlines()
    assert refused.startswith(f"weights file {text} is not a readable HDF5 file")
    assert modules == "False True"


def test_command_line_refuses_an_unreadable_file_before_tensorflow(data_dir, tmp_path):
    text = tmp_path / "weights.h5"
    text.write_text("not weights\n")
    result = run_module("-m", "agetf.train", f"--data_dir={data_dir}",
                        f"--model_dir={tmp_path / 'run'}", f"--weights={text}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"agetf.train: error: weights file {text} is not a readable HDF5 file (file signature "
        f"not found); {model_config._WEIGHTS_FIX}"]


@pytest.mark.slow
def test_command_line_refuses_a_file_of_another_width_in_one_line(data_dir, files, tmp_path):
    result = run_module("-m", "agetf.train", f"--data_dir={data_dir}",
                        f"--model_dir={tmp_path / 'run'}", "--img_dim=32", "--alpha=0.35",
                        f"--weights={files[0.5]}", "--batch_size=16", "--steps_per_epoch=1",
                        "--epochs=1", "--mixed_precision=float32", "--strategy=default")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("agetf.train:")]
    assert errors == [f"agetf.train: error: weights file {files[0.5]} holds MobileNetV2 "
                      "alpha=0.5 weights, not MobileNetV2 alpha=0.35: its layers/conv2d_3 "
                      "(this backbone's block_1_project) holds a kernel of shape (1, 1, 48, 16) "
                      "where this backbone has (1, 1, 48, 8); pass --base_model=MobileNetV2 "
                      "--alpha=0.5, or a weights file for MobileNetV2 alpha=0.35"]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
