"""Each evaluation's report is named by its split and protocol, so none overwrites another."""

import json

import numpy as np
import pytest

from agetf import config

from tiny_runs import calibrate_batchnorm, tiny_config  # pytest puts tests/ on sys.path


@pytest.mark.parametrize("split, protocol, name", [
    ("test", "random", "evaluation.json"),
    ("validation", "random", "evaluation_validation.json"),
    ("test", "ages_21_60", "evaluation_ages_21_60.json"),
    ("validation", "ages_21_60", "evaluation_validation_ages_21_60.json"),
])
def test_report_name_by_split_and_protocol(split, protocol, name):
    assert config.EvalConfig(split=split, protocol=protocol).report_name == name


def test_every_split_and_protocol_has_its_own_report_name():
    names = {config.EvalConfig(split=split, protocol=protocol).report_name
             for split in config.EVAL_SPLITS for protocol in config.EVAL_PROTOCOLS}
    assert len(names) == len(config.EVAL_SPLITS) * len(config.EVAL_PROTOCOLS)


@pytest.mark.slow
def test_two_protocols_leave_two_reports(data_dir, tmp_path):
    """`--load --eval_protocol=ages_21_60` after training keeps the random protocol's report."""
    from agetf.modeling import model as model_lib
    from agetf.training import train_lib

    heads = ("age_histogram", "gender")
    model = model_lib.build_model(backbone="MobileNetV2", img_dim=32, heads=heads, alpha=0.35)
    calibrate_batchnorm(model, np.random.default_rng(1).uniform(0, 255, (8, 32, 32, 3))
                        .astype("float32"))
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    model.save(model_dir / "best.keras")
    for protocol in ("random", "ages_21_60"):
        run = tiny_config(data_dir, model_dir, heads=heads,
                          export=config.ExportConfig(saved_model=False),
                          evaluation=config.EvalConfig(protocol=protocol, print_predictions=0))
        train_lib.evaluate_and_export(run)
    everything = json.loads((model_dir / "evaluation.json").read_text())
    narrow = json.loads((model_dir / "evaluation_ages_21_60.json").read_text())
    assert everything["protocol"] == "random" and narrow["protocol"] == "ages_21_60"
    assert 0 < narrow["num_images"] < everything["num_images"]
