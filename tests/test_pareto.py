"""Pareto sweeps: the front, and the space file's several metrics."""

import math

import pytest
import yaml

from distmtl.errors import ConfigError
from distmtl.tune.pareto import pareto_front
from distmtl.tune.space import Space

from conftest import REPO


def test_the_front_keeps_exactly_the_points_nothing_dominates_with_mixed_directions():
    """Accuracy is maximised and MAE minimised: (0.6, 0.3) beats (0.5, 0.4); (0.7, 0.5) and (0.4, 0.2) trade
    off against it; a tie is not domination; a NaN point takes no part."""
    modes = ["max", "min"]
    points = {"a": [0.6, 0.3], "b": [0.5, 0.4], "c": [0.7, 0.5], "d": [0.4, 0.2], "e": [0.6, 0.3], "f": [math.nan, 0.1]}
    assert pareto_front(points, modes) == ["a", "c", "d", "e"]  # in the points' order
    assert pareto_front({"b": [0.5, 0.4], "a": [0.6, 0.3]}, modes) == ["a"]
    assert pareto_front({}, modes) == []


def write_space(tmp_path, **fields):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"base": str(REPO / "search_spaces/configs/quick.yaml"),
                                    "parameters": {"optim.weight_decay": {"type": "loguniform", "low": 1e-6, "high": 1e-2}},
                                    **fields}))
    return path


def test_a_space_with_several_metrics_is_a_fifo_pareto_sweep_and_bad_ones_are_refused(tmp_path):
    space = Space(write_space(tmp_path, metric=["val/fine/accuracy", "val/shape/mae"]))
    assert space.pareto and space.modes == ["max", "min"] and space.scheduler_name == "fifo"
    assert space.objectives == [("val/fine/accuracy", "max"), ("val/shape/mae", "min")]
    assert "Pareto sweep" in space.describe()
    single = Space(write_space(tmp_path, metric="val/fine/accuracy"))
    assert not single.pareto and single.objectives == [("val/fine/accuracy", "max")]
    for fields, message in (
        ({"metric": ["val/fine/accuracy", "val/shape/mae"], "mode": ["max"]}, "1 mode\\(s\\) for 2 metric\\(s\\)"),
        ({"metric": ["val/fine/accuracy", "val/fine/accuracy"]}, "several different ones"),
        ({"metric": ["val/fine/accuracy", "val/nope"]}, "metric 'val/nope' is not reported"),
        ({"metric": ["val/fine/accuracy", "val/shape/mae"], "cv": 3}, "cannot be cross-validated"),
    ):
        with pytest.raises(ConfigError, match=message) as caught:
            Space(write_space(tmp_path, **fields))
        assert "\n" not in str(caught.value)
