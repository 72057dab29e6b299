"""LR range test arithmetic: LR per step, smoothing, stop rule, suggestion."""

import json
import math

import numpy as np
import pytest

from agetf.training.lr_finder import LRRangeTest


def test_lr_at_spans_the_range_geometrically():
    t = LRRangeTest(min_lr=1e-10, max_lr=10.0, num_steps=12)  # one decade per step
    assert t.lr_at(0) == pytest.approx(1e-10)
    assert t.lr_at(3) == pytest.approx(1e-7)
    assert t.lr_at(11) == pytest.approx(10.0)
    ratios = [t.lr_at(i + 1) / t.lr_at(i) for i in range(11)]
    assert ratios == pytest.approx([10.0] * 11)


def test_smoothing_is_bias_corrected_moving_average():
    t = LRRangeTest(num_steps=10, beta=0.5)
    for loss in (4.0, 2.0, 1.0):
        assert t.record(1e-3, loss)
    # avg: 2, 2, 1.5; corrections 1-0.5, 1-0.25, 1-0.125.
    assert t.smoothed == pytest.approx([4.0, 2.0 / 0.75, 1.5 / 0.875])
    assert t.losses == [4.0, 2.0, 1.0]


def test_stops_when_smoothed_loss_exceeds_stop_factor_times_best():
    t = LRRangeTest(num_steps=10, beta=0.0, stop_factor=4.0)  # beta 0: smoothed == raw
    assert t.record(1e-5, 1.0)
    assert t.record(1e-4, 0.5)
    assert t.record(1e-3, 1.9)  # below 4 x 0.5
    assert not t.record(1e-2, 2.1)
    assert "exceeded" in t.stop_reason


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_stops_on_non_finite_loss_without_recording_it(bad):
    t = LRRangeTest(num_steps=10)
    assert t.record(1e-5, 1.0)
    assert not t.record(1e-4, bad)
    assert t.losses == [1.0] and len(t.smoothed) == 1
    json.dumps(t.to_json(), allow_nan=False)


def run_curve(num_steps, noise=0.0, blow_up_at=-0.5):
    """Range test over 1e-6..1 on loss = f(log10 lr), steepest descent at lr 1e-3."""
    t = LRRangeTest(min_lr=1e-6, max_lr=1.0, num_steps=num_steps)
    rng = np.random.default_rng(0)
    for i in range(num_steps):
        lr = t.lr_at(i)
        u = math.log10(lr)
        loss = 2.0 - math.tanh(2.0 * (u + 3.0)) + math.exp(3.0 * (u - blow_up_at))
        if not t.record(lr, loss + noise * rng.normal()):
            break
    return t


@pytest.mark.parametrize("num_steps, noise", [(100, 0.0), (300, 0.0), (300, 0.05), (1000, 0.05)])
def test_suggestion_finds_the_steepest_descent(num_steps, noise):
    t = run_curve(num_steps, noise)
    suggestion = t.suggestion()
    assert 1e-6 <= suggestion <= 1.0
    assert abs(math.log10(suggestion) - (-3.0)) < 0.2


def test_suggestion_ignores_the_blown_up_tail():
    t = run_curve(400, blow_up_at=-1.5)  # steep rise, the test stops early
    assert t.stop_reason and len(t.lrs) < 400
    assert abs(math.log10(t.suggestion()) - (-3.0)) < 0.2


def test_no_suggestion_without_a_falling_curve():
    short = LRRangeTest(num_steps=100)
    for i in range(5):
        short.record(short.lr_at(i), 1.0)
    assert short.suggestion() is None
    rising = LRRangeTest(num_steps=50, stop_factor=100.0)
    for i in range(50):
        rising.record(rising.lr_at(i), 1.0 + 0.01 * i)
    assert rising.suggestion() is None


def test_to_json_round_trips():
    t = run_curve(100)
    data = json.loads(json.dumps(t.to_json(), allow_nan=False))
    assert data["lrs"] == t.lrs and data["smoothed"] == pytest.approx(t.smoothed)
    assert data["suggestion"] == pytest.approx(t.suggestion())
    assert data["settings"] == {"min_lr": 1e-6, "max_lr": 1.0, "num_steps": 100,
                                "beta": 0.98, "stop_factor": 4.0}


@pytest.mark.parametrize("kwargs, match", [
    ({"min_lr": 1.0, "max_lr": 0.1}, "min_lr < max_lr"),
    ({"num_steps": 1}, "at least 2 steps"),
    ({"beta": 1.0}, "beta"),
    ({"stop_factor": 0.5}, "stop_factor"),
])
def test_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRRangeTest(**kwargs)
