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
                                    "parameters": {"optim.weight_decay": {"type": "loguniform",
                                                                          "low": 1e-6, "high": 1e-2}},
                                    **fields}))
    return path


def test_a_space_with_several_metrics_is_a_pareto_sweep_and_bad_ones_are_refused(tmp_path):
    space = Space(write_space(tmp_path, metric=["val/fine/accuracy", "val/shape/mae"]))
    assert space.pareto and space.modes == ["max", "min"]
    assert space.objectives == [("val/fine/accuracy", "max"), ("val/shape/mae", "min")]
    assert "Pareto sweep" in space.describe()
    single = Space(write_space(tmp_path, metric="val/fine/accuracy"))
    assert not single.pareto and single.objectives == [("val/fine/accuracy", "max")]
    for fields, message in (
        ({"metric": ["val/fine/accuracy", "val/shape/mae"], "mode": ["max"]}, "1 mode\\(s\\) for 2 metric\\(s\\)"),
        ({"metric": ["val/fine/accuracy", "val/fine/accuracy"]}, "several different ones"),
        ({"metric": ["val/fine/accuracy", "val/nope"]}, "metric 'val/nope' is not reported"),
        ({"metric": ["val/fine/accuracy", "val/shape/mae"], "cv": 3}, "cannot be cross-validated"),
        ({"metric": "val/fine/accuracy", "scheduler": {"name": "moasha"}}, "moasha ranks several metrics"),
        ({"metric": "val/fine/accuracy", "reference_point": [0.0]}, "only a Pareto sweep"),
        ({"metric": ["val/fine/accuracy", "val/shape/mae"], "reference_point": [0.0]}, "1 value\\(s\\) for 2 metrics"),
    ):
        with pytest.raises(ConfigError, match=message) as caught:
            Space(write_space(tmp_path, **fields))
        assert "\n" not in str(caught.value)


def test_a_pareto_space_asking_for_asha_gets_multi_objective_asha_and_fifo_stays_fifo(tmp_path):
    """The scheduler a space gets, as its ``--dry-run`` description says: ASHA (the default) over several metrics is
    MO-ASHA, built with the space's rungs; ``moasha`` says so explicitly; ``fifo`` runs every trial to its end."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from distmtl.tune.algorithms import build_scheduler
    from distmtl.tune.moasha import MultiObjectiveASHA

    metrics = ["val/fine/accuracy", "val/shape/mae"]
    for scheduler in ({}, {"name": "asha", "grace_period": 2}, {"name": "moasha", "grace_period": 2}):
        space = Space(write_space(tmp_path, metric=metrics, scheduler=scheduler))
        assert space.scheduler_name == "moasha" and space.stops_early
        built = build_scheduler(space)
        assert isinstance(built, MultiObjectiveASHA) and built.metrics == metrics and built.modes == ["max", "min"]
        assert "scheduler     moasha, multi-objective ASHA" in space.describe()
        assert "non-dominated sorting" in space.describe()
    assert min(m for m, _ in built.rungs) == 2
    fifo = Space(write_space(tmp_path, metric=metrics, scheduler={"name": "fifo"}))
    assert fifo.scheduler_name == "fifo" and not fifo.stops_early and type(build_scheduler(fifo)) is FIFOScheduler
    assert "scheduler     fifo (every trial runs all its epochs" in fifo.describe()
    single = Space(write_space(tmp_path, metric="val/fine/accuracy"))
    assert single.scheduler_name == "asha" and isinstance(build_scheduler(single), ASHAScheduler)
    assert "scheduler     asha (max_t" in single.describe()


def test_the_dry_run_says_where_hypervolume_is_measured_from(tmp_path):
    metrics = ["val/fine/accuracy", "val/shape/mae"]
    stated = Space(write_space(tmp_path, metric=metrics, reference_point=[0.1, 2.0])).describe()
    assert "hypervolume   from reference point val/fine/accuracy 0.1, val/shape/mae 2" in stated
    assert "derived from the finished trials" in Space(write_space(tmp_path, metric=metrics)).describe()
