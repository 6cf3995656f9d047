import math

import pytest

from distmtl.config.schema import WeightingConfig
from distmtl.weighting import build_weighting


def test_fixed_weights_are_the_static_lambdas():
    w = build_weighting(WeightingConfig(method="fixed", weights={"shape": 0.25}), ["fine", "shape"])
    w.end_epoch({"fine": 2.0, "shape": 1.0})
    assert w.weights() == {"fine": 1.0, "shape": 0.25}


def test_dwa_worked_example():
    """Two tasks, T = 2: losses (1.0, 2.0) then (0.5, 1.8) give r = (0.5, 0.9) and
    w = 2·exp(r/2)/Σexp(r/2) = (0.9003, 1.0997)."""
    w = build_weighting(WeightingConfig(method="dwa", temperature=2.0), ["a", "b"])
    assert w.weights() == {"a": 1.0, "b": 1.0}
    w.end_epoch({"a": 1.0, "b": 2.0})
    assert w.weights() == {"a": 1.0, "b": 1.0}
    w.end_epoch({"a": 0.5, "b": 1.8})
    ea, eb = math.exp(0.25), math.exp(0.45)
    expected = {"a": 2 * ea / (ea + eb), "b": 2 * eb / (ea + eb)}
    assert w.weights() == pytest.approx(expected)
    assert w.weights()["a"] == pytest.approx(0.9003, abs=1e-4)
    assert sum(w.weights().values()) == pytest.approx(2.0)


def test_dwa_uses_only_the_last_two_epochs_and_multiplies_static_weights():
    w = build_weighting(WeightingConfig(method="dwa", temperature=1.0, weights={"b": 0.5}), ["a", "b"])
    for losses in ({"a": 9.0, "b": 9.0}, {"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 2.0}):
        w.end_epoch(losses)
    ea, eb = math.exp(1.0), math.exp(2.0)
    assert w.weights() == pytest.approx({"a": 2 * ea / (ea + eb), "b": 0.5 * 2 * eb / (ea + eb)})


def test_high_temperature_tends_to_equal_weights():
    w = build_weighting(WeightingConfig(method="dwa", temperature=1e6), ["a", "b", "c"])
    w.end_epoch({"a": 1.0, "b": 1.0, "c": 1.0})
    w.end_epoch({"a": 0.1, "b": 1.0, "c": 3.0})
    assert w.weights() == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0}, rel=1e-5)


def test_dwa_state_round_trips():
    cfg = WeightingConfig(method="dwa")
    w = build_weighting(cfg, ["a", "b"])
    w.end_epoch({"a": 1.0, "b": 2.0})
    w.end_epoch({"a": 0.7, "b": 1.0})
    restored = build_weighting(cfg, ["a", "b"])
    restored.load_state_dict(w.state_dict())
    assert restored.weights() == w.weights()
