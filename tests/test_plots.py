"""PNG plots: valid files for any history shape; face grid shape and content."""

import csv
import itertools
import json
import os

import numpy as np
import pytest
from PIL import Image

from agetf.training import plots


def read_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def history(epochs, keys):
    rng = np.random.default_rng(epochs)
    return {key: list(rng.uniform(0.1, 0.9, epochs)) for key in keys}


FULL = ["loss", "val_loss", "age_histogram_loss", "val_age_histogram_loss", "mae", "val_mae",
        "cs5", "val_cs5", "age_range_accuracy", "val_age_range_accuracy", "gender_accuracy",
        "val_gender_accuracy", "lr", "images_per_second"]


@pytest.mark.parametrize("epochs, keys", [
    (5, FULL),
    (1, FULL),
    (3, ["loss", "age_histogram_loss", "mae", "cs5", "lr"]),  # no validation keys
    (4, ["loss", "val_loss", "gender_loss", "val_gender_loss", "gender_accuracy",
         "val_gender_accuracy"]),  # gender head only
    (2, ["loss", "val_loss", "age_loss", "val_age_loss", "age_mae", "val_age_mae"]),
    (3, ["val_loss", "val_mae"]),  # validation only
    (2, ["custom_metric"]),
    (0, []),
])
def test_plot_training_writes_a_png_for_any_history(tmp_path, epochs, keys):
    path = tmp_path / "plots" / "training.png"  # the folder does not exist yet
    plots.plot_training(history(epochs, keys), str(path))
    pixels = read_png(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0  # something was drawn
    assert os.listdir(path.parent) == ["training.png"]  # no temporary file left behind


def test_plot_training_tolerates_odd_entries(tmp_path):
    odd = {"loss": [1.0, None, 0.5], "val_loss": [float("nan")] * 3, "note": "text",
           "nested": [[1, 2], [3, 4]], "scalar": 3.0, "lr": [1e-3, 1e-3, 2e-4],
           "val_mae": [9.0, 8.0]}  # shorter than the others
    path = tmp_path / "training.png"
    plots.plot_training(odd, str(path))
    assert read_png(path).size > 0


@pytest.mark.slow
def test_plot_training_replaces_an_existing_plot(tmp_path):
    path = tmp_path / "training.png"
    plots.plot_training(history(1, ["loss"]), str(path))
    first = read_png(path)
    plots.plot_training(history(6, FULL), str(path))
    assert read_png(path).shape != first.shape


def test_metric_families_group_train_and_val():
    families = plots.metric_families({**history(2, FULL), "epoch": [1, 2]})
    names = [name for name, _, _ in families]
    assert names[0] == "loss" and names[-1] == "lr"
    assert set(names) == {"loss", "age_histogram_loss", "mae", "cs5", "age_range_accuracy",
                          "gender_accuracy", "lr", "images_per_second"}
    by_name = {name: (train, val) for name, train, val in families}
    assert by_name["mae"][0] is not None and by_name["mae"][1] is not None
    assert by_name["images_per_second"][1] is None


@pytest.mark.parametrize("family, ylabel", [
    ("mae", "MAE (years)"), ("age_mae", "MAE (years)"), ("cs5", "share of faces"),
    ("gender_accuracy", "accuracy"), ("loss", "loss"), ("age_histogram_loss", "loss"),
    ("lr", "learning rate"),
])
def test_axes_are_labelled_in_human_units(family, ylabel):
    assert plots.describe_family(family)[1] == ylabel


def test_plot_lr_find(tmp_path):
    lrs = list(np.geomspace(1e-6, 1.0, 80))
    losses = [2.0 - np.tanh(2 * (np.log10(lr) + 3)) for lr in lrs]
    path = tmp_path / "lr_find.png"
    plots.plot_lr_find(lrs, losses, losses, 1e-3, str(path))
    assert read_png(path).size > 0
    plots.plot_lr_find([], [], [], None, str(path))  # a test stopped before any step
    assert read_png(path).size > 0


@pytest.mark.parametrize("images", [
    np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32),
    np.random.default_rng(1).integers(0, 256, (3, 40, 30, 3), dtype=np.uint8),
    np.random.default_rng(2).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8),
])
def test_face_grid_shape_and_dtype(images):
    captions = [f"age {20 + i}\nfemale 0.{i}" for i in range(len(images))]
    grid = plots.face_grid(images, captions, columns=2)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    rows = -(-len(images) // 2)
    cell = 128 * images.shape[1] / images.shape[2]  # faces are enlarged to 128 px wide
    assert grid.shape[1] == 2 * (128 + 6) + 6
    assert grid.shape[0] > rows * cell


def test_face_grid_shows_the_faces():
    red = np.zeros((1, 16, 16, 3), np.float32)
    red[..., 0] = 255.0
    grid = plots.face_grid(red, ["red"], columns=4)
    assert grid.shape[1] == 128 + 12  # one column when there is one face
    reds = (grid[..., 0] > 200) & (grid[..., 1] < 60) & (grid[..., 2] < 60)
    assert reds.sum() > 0.8 * 128 * 128  # the enlarged face is drawn, not lost


@pytest.mark.parametrize("images, captions, match", [
    (np.zeros((2, 8, 8, 3)), ["one"], "one caption per image"),
    (np.zeros((2, 8, 8, 4)), ["a", "b"], "1 or 3"),
    (np.zeros((0, 8, 8, 3)), [], "N > 0"),
])
def test_face_grid_rejects_bad_input(images, captions, match):
    with pytest.raises(ValueError, match=match):
        plots.face_grid(images, captions)


# What the monitor must show of each head, written out here rather than taken from the code.
HEAD_FAMILIES = {
    "age_histogram": {"age_histogram_loss", "mae", "cs5"},
    "age_range": {"age_range_loss", "age_range_accuracy", "mae", "cs5"},  # ages read from ranges
    "age": {"age_loss", "mae", "cs5"},
    "gender": {"gender_loss", "gender_accuracy"},
}
HEAD_COMBINATIONS = [combo for n in range(1, 5)
                     for combo in itertools.combinations(HEAD_FAMILIES, n)]


@pytest.mark.parametrize("heads", HEAD_COMBINATIONS, ids="+".join)
def test_monitor_files_show_each_heads_metrics(tmp_path, heads):
    # The monitor's own code from the metric sets' keys to the files, with made-up values.
    from agetf.modeling import heads as heads_lib
    from agetf.training import callbacks

    assert len(HEAD_COMBINATIONS) == 15
    train_keys = heads_lib.MetricSet(heads).results()
    val_keys = heads_lib.MetricSet(heads, prefix="val_").results()
    history = {}
    for epoch in range(2):
        logs = callbacks.epoch_logs({k: 0.5 - 0.1 * epoch for k in train_keys},
                                      {k: 0.6 - 0.1 * epoch for k in val_keys}, lr=1e-3,
                                      images_per_sec=100.0, seconds=2.0)
        callbacks.append_epoch(history, epoch, logs)
    callbacks.write_history_files(str(tmp_path), history)

    saved = json.load(open(tmp_path / "history.json"))
    assert saved == history and saved["epoch"] == [1, 2]
    with open(tmp_path / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and set(rows[0]) == set(history)
    families = {name: (train, val) for name, train, val in plots.metric_families(saved)}
    age_heads = [h for h in heads if h != "gender"]
    wanted = {"loss", "lr"}.union(*(HEAD_FAMILIES[h] for h in heads))
    wanted |= {f"{h}_mae" for h in age_heads} if len(age_heads) > 1 else set()
    assert wanted <= set(families), wanted - set(families)
    for family in wanted - {"lr"}:
        train, val = families[family]
        assert train is not None and val is not None, family  # training and validation curves
    # One panel per family: the figure is 3 panels wide and as many rows high as needed.
    pixels = read_png(tmp_path / "plots" / "training.png")
    panels = len(families)
    assert pixels.shape[:2] == (360 * -(-panels // 3), 500 * min(3, panels))
