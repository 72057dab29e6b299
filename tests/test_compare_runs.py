"""scripts/compare_runs: runs compared at equal training time, from their history.json."""

import json
import os
import subprocess
import sys

import matplotlib.image

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                      "compare_runs")


def write_run(folder, **history):
    folder.mkdir()
    (folder / "history.json").write_text(json.dumps(history))
    return folder


def run_script(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                          text=True)


def test_table_plot_and_json_carry_each_runs_time_and_metrics(tmp_path):
    fast = write_run(tmp_path / "fast", epoch_seconds=[60, 60, 60], images_per_sec=[90, 100, 110],
                     val_mae=[9.0, 7.0, 7.5], val_gender_accuracy=[0.8, 0.9, 0.85])
    slow = write_run(tmp_path / "slow", epoch_seconds=[150, 150], images_per_sec=[40, 40],
                     val_mae=[8.0, 6.5])
    plot = tmp_path / "compare.png"
    result = run_script(fast, f"big input={slow}", "--plot", plot)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # Three 1-minute epochs; the last MAE 7.5 and the best 7.0 (smaller is better), the last
    # accuracy 0.85 and the best 0.9 (larger is better).
    assert "| fast | 3 | 3.0 | 100 | 7.50 | 7.00 | 0.850 | 0.900 |" in lines
    # A run without a metric shows dashes, not a number.
    assert "| big input | 2 | 5.0 | 40 | 6.50 | 6.50 | - | - |" in lines
    report = json.loads(lines[-1])["runs"]
    assert report["big input"]["minutes"] == 5.0 and report["fast"]["best_val_mae"] == 7.0
    image = matplotlib.image.imread(plot)
    assert image.shape[1] > image.shape[0] > 100  # two panels side by side


def test_a_folder_without_history_is_one_line_naming_it(tmp_path):
    result = run_script(tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"compare_runs: error: cannot read {tmp_path / 'history.json'} (FileNotFoundError); "
        "pass the --model_dir of a run that finished at least one epoch"]
