"""scripts/benchmark_train runs its model.fit row next to the custom loop's and reports custom/fit."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # end-to-end: real processes and runs (pytest.ini)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fit_row_runs_and_the_json_reports_custom_vs_fit(data_dir):
    command = [sys.executable, os.path.join(REPO, "scripts", "benchmark_train"),
               f"--data_dir={data_dir}", "--strategies=default", "--heads=age_histogram,gender",
               "--img_dim=32", "--batch_size=4", "--steps=2", "--steps_per_loop=2",
               "--warmup_steps=0", "--rounds=1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    fit = [row for row in result["rows"] if row["loop"] == "fit"]
    assert [(row["steps_per_loop"], row["feed"]) for row in fit] == [(1, "pipeline"), (2, "pipeline")]
    assert all(row["images_per_sec"] > 0 for row in fit)
    custom = next(row for row in result["rows"] if row["loop"] == "custom"
                  and row["feed"] == "pipeline" and row["steps_per_loop"] == 2)
    assert result["custom_vs_fit_ratio"] == custom["custom_vs_fit"] > 0
    assert result["custom_vs_fit_by_cpu_ratio"] == custom["custom_vs_fit_by_cpu"] > 0
