"""scripts/benchmark_train compares the custom loop with model.fit and reports custom/fit."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # end-to-end: real processes and runs (pytest.ini)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fit_comparison_runs_and_the_json_reports_custom_vs_fit(data_dir):
    command = [sys.executable, os.path.join(REPO, "scripts", "benchmark_train"),
               f"--data_dir={data_dir}", "--strategies=default", "--heads=age_histogram,gender",
               "--img_dim=32", "--batch_size=4", "--steps=2", "--steps_per_loop=2",
               "--warmup_steps=0", "--rounds=1", "--blocks=3", "--block_steps=2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "custom loop vs model.fit" in done.stdout
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(row["strategy"], row["steps_per_loop"], row["feed"]) for row in result["rows"]] == [
        ("default", 1, "in_memory"), ("default", 1, "pipeline"),
        ("default", 2, "in_memory"), ("default", 2, "pipeline")]
    fit = result["fit_comparison"]
    assert [row["steps_per_loop"] for row in fit] == [1, 2]
    for row in fit:
        assert row["blocks"] == 3 and len(row["blocks_custom_vs_fit"]) == 3
        assert row["images_per_block"] == 2 * 4  # block_steps 2 at batch 4
        # Each timed fit block spans exactly the host calls of the custom loop's block.
        assert row["host_calls_per_block"] == 2 // row["steps_per_loop"]
        assert row["fit_host_calls_timed"] == [row["host_calls_per_block"]] * 3
        assert row["custom_images_per_sec"] > 0 and row["fit_images_per_sec"] > 0
        for interval in ("custom_vs_fit_quartiles", "custom_vs_fit_interval_95"):
            low, high = row[interval]
            assert min(row["blocks_custom_vs_fit"]) <= low <= row["custom_vs_fit"] <= high
            assert high <= max(row["blocks_custom_vs_fit"])
    assert result["custom_vs_fit_ratio"] == fit[1]["custom_vs_fit"] > 0
    assert result["custom_vs_fit_by_cpu_ratio"] == fit[1]["custom_vs_fit_by_cpu"] > 0


def test_bad_block_flags_are_one_line_errors(data_dir):
    command = [sys.executable, os.path.join(REPO, "scripts", "benchmark_train"),
               f"--data_dir={data_dir}", "--blocks=0", "--block_steps=3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --blocks=0 and --block_steps=3 must be at least 1")
