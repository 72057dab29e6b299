"""scripts/results_table: the docs' result tables come from evaluation.json, not by hand."""

import json
import os
import subprocess
import sys

import numpy as np

from agetf.evaluation import evaluator

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                      "results_table")


def test_tables_carry_the_report_numbers(tmp_path):
    ages = np.array([3, 25, 27, 41, 85], np.float64)
    histogram = np.zeros((5, 101), np.float32)
    histogram[np.arange(5), [5, 25, 30, 40, 70]] = 1.0  # predicted ages 5, 25, 30, 40, 70
    outputs = {"age_histogram": histogram, "gender": np.array([0.9, 0.2, 0.7, 0.1, 0.6])}
    labels = {"age": ages, "gender": np.array([1, 0, 0, 0, 1]), "race": np.zeros(5, int)}
    report = evaluator.summarize(outputs, labels, train_ages=np.array([20, 30, 40]),
                                  train_genders=np.array([0, 0, 1]))
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(report))
    out = subprocess.run([sys.executable, SCRIPT, str(path)], capture_output=True, text=True,
                         check=True).stdout
    # MAE = (2 + 0 + 3 + 1 + 15) / 5 = 4.2; within 5 years: 4 of 5; gender right: 4 of 5.
    assert "| age MAE (years) | 4.20 | " in out
    assert "| CS@5 (share within 5 years) | 0.800 | " in out
    assert "| gender accuracy | 0.800 | " in out
    assert "| 80+ | 1 | 15.00 | 55.00 | 0.000 | 1.000 |" in out  # constant age 30


def test_unreadable_report_is_one_line(tmp_path):
    bad = tmp_path / "evaluation.json"
    bad.write_text("{not json")
    result = subprocess.run([sys.executable, SCRIPT, str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot read" in result.stderr


def test_a_run_folder_stands_for_all_its_reports(tmp_path):
    report = evaluator.summarize(
        {"age_histogram": np.eye(101, dtype=np.float32)[[20, 40]], "gender": np.array([0.9, 0.2])},
        {"age": np.array([22.0, 40.0]), "gender": np.array([1, 0]), "race": np.zeros(2, int)},
        train_ages=np.array([30]), train_genders=np.array([0]))
    for name, protocol in (("evaluation.json", "random"),
                           ("evaluation_ages_21_60.json", "ages_21_60")):
        (tmp_path / name).write_text(json.dumps(dict(report, protocol=protocol)))
    (tmp_path / "history.json").write_text("{}")
    out = subprocess.run([sys.executable, SCRIPT, str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout
    assert f"{tmp_path / 'evaluation.json'}: 2 test faces, protocol random" in out
    assert f"{tmp_path / 'evaluation_ages_21_60.json'}: 2 test faces, protocol ages_21_60" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, SCRIPT, str(empty)], capture_output=True, text=True)
    assert result.returncode != 0 and "holds no evaluation*.json" in result.stderr
