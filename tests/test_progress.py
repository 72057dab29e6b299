"""Progress bars on the long loops (evaluation, the LR finder): drawn on a terminal only, so no
carriage return reaches a log file, and the results are the same either way."""

import io
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from agetf.common import progress
from agetf.data import input_pipeline
from agetf.data.input_config import InputConfig
from agetf.evaluation import evaluator
from agetf.modeling import model as model_lib
from agetf.training import lr_finder

IMG_DIM = 32


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self):
        return True


def use_terminal(monkeypatch):
    """Replaces stderr by a terminal whose text the test reads. (In the test itself: pytest
    puts its own stderr back between a fixture and the test.)"""
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_a_bar_is_drawn_on_a_terminal_only(monkeypatch):
    use_terminal(monkeypatch)
    assert progress.shown() and progress.shown(None)
    assert not progress.shown(False)
    assert not progress.on_terminal(io.StringIO()) and not progress.on_terminal(object())


@pytest.fixture(scope="module")
def tiny_model():
    return model_lib.build_model(backbone="MobileNetV2", img_dim=IMG_DIM, heads=("age", "gender"),
                                 alpha=0.35, weights="none")


def evaluate(model, data_dir):
    config = InputConfig(data_dir=data_dir, img_dim=IMG_DIM)
    report, lines = evaluator.evaluate(model, config, "test", batch_size=8, print_predictions=2)
    return report, lines


def test_evaluation_off_a_terminal_writes_no_bar(tiny_model, data_dir, capsys):
    report, lines = evaluate(tiny_model, data_dir)
    assert capsys.readouterr().err == ""
    assert report["num_images"] == input_pipeline.num_examples(data_dir, "test") and lines


def test_evaluation_on_a_terminal_draws_a_bar_and_gives_the_same_report(tiny_model, data_dir,
                                                                        monkeypatch):
    terminal = use_terminal(monkeypatch)
    on_terminal = evaluate(tiny_model, data_dir)
    drawn = terminal.getvalue()
    total = input_pipeline.num_examples(data_dir, "test")
    assert "evaluating test" in drawn and f"/{total} " in drawn and "\r" in drawn
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert evaluate(tiny_model, data_dir) == on_terminal


def fake_trainer(losses, chief=True):
    """What lr_finder.find_lr reads from a Trainer: one weight, and a loss per step."""
    steps = iter(losses)
    return types.SimpleNamespace(
        chief=chief, model=types.SimpleNamespace(variables=[tf.Variable(1.0)]),
        optimizer=types.SimpleNamespace(variables=[]), global_step=tf.Variable(0, dtype=tf.int64),
        step_in_epoch=tf.Variable(0, dtype=tf.int64), non_finite=tf.Variable(False),
        train_data=[None], train_steps=lambda iterator, num_steps: next(steps))


LOSSES = list(np.linspace(2.0, 1.0, 12))


def test_the_lr_finder_off_a_terminal_writes_no_bar(capsys):
    test = lr_finder.find_lr(fake_trainer(LOSSES), lr_finder.LRRangeTest(1e-4, 1.0, 12))
    assert capsys.readouterr().err == ""
    assert test.losses == pytest.approx(LOSSES)


def test_the_lr_finder_draws_a_bar_on_the_chiefs_terminal_only(monkeypatch):
    terminal = use_terminal(monkeypatch)
    test = lr_finder.find_lr(fake_trainer(LOSSES), lr_finder.LRRangeTest(1e-4, 1.0, 12))
    drawn = terminal.getvalue()
    assert "LR finder" in drawn and "/12 " in drawn and "\r" in drawn
    assert test.losses == pytest.approx(LOSSES)
    terminal.seek(0)
    terminal.truncate()
    lr_finder.find_lr(fake_trainer(LOSSES, chief=False), lr_finder.LRRangeTest(1e-4, 1.0, 12))
    assert terminal.getvalue() == ""


def test_a_counting_bar_counts_whether_it_is_drawn_or_not(monkeypatch):
    terminal = use_terminal(monkeypatch)
    for enabled in (False, True):
        bar = progress.CountingBar("converting", 3, enabled=enabled)
        bar.add(2)
        bar.add(1)
        bar.close()
        assert (bar.done, bar.total) == (3, 3)
        assert ("converting" in terminal.getvalue()) == enabled
