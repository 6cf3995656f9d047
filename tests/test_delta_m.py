"""Δm against single-task baselines: the formula, the baseline file, `distmtl baseline --single-task`, and runs
and sweeps that report and rank by it."""

import json
import math

import pytest
import yaml

from distmtl.cli import main
from distmtl.config import config_from_dict
from distmtl.engine import LocalReporter, train
from distmtl.engine.assembly import check_config
from distmtl.errors import ConfigError
from distmtl.tasks.baseline import Baseline, TaskBaseline
from distmtl.tune.space import Space

from conftest import small_config

BASELINE = Baseline({"fine": TaskBaseline("accuracy", "max", val=0.5, test=0.4),
                     "shape": TaskBaseline("mae", "min", val=0.2, test=0.25)}, {})


def test_delta_m_matches_a_hand_computation_with_a_lower_is_better_task():
    """fine: 0.6 against 0.5 is +20 %; shape MAE 0.25 against 0.2 is 25 % worse (lower is better): Δm = −2.5 %."""
    metrics = {"val/fine/accuracy": 0.6, "val/shape/mae": 0.25, "test/fine/accuracy": 0.3, "test/shape/mae": 0.2}
    assert BASELINE.delta_m(metrics, "val") == pytest.approx((20.0 - 25.0) / 2)
    assert BASELINE.delta_m(metrics, "test") == pytest.approx((-25.0 + 20.0) / 2)
    assert math.isnan(BASELINE.delta_m({"val/fine/accuracy": 0.6}, "val"))  # a task without its metric: no score


def test_the_baseline_file_round_trips_and_bad_files_are_refused_in_one_line(tmp_path):
    path = tmp_path / "b.json"
    BASELINE.save(path)
    assert Baseline.load(path).tasks == BASELINE.tasks and "NaN" not in path.read_text()
    tasks = small_config().tasks
    for content, expected in (("{not json", "is not a baseline file"),
                              ('{"format": "other"}', "not a distmtl single-task"),
                              (path.read_text(), "no single-task result for \\['colour'\\]")):
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(ConfigError, match=expected) as caught:
            check_config(small_config(**{"train.baseline": str(bad)}))
        assert "\n" not in str(caught.value) and str(bad) in str(caught.value)
    zero = Baseline({t: TaskBaseline("accuracy" if t != "shape" else "mae", "max", 0.0, 0.5) for t in tasks}, {})
    zero.save(path)
    with pytest.raises(ConfigError, match="fine's val accuracy is 0.0"):
        check_config(small_config(**{"train.baseline": str(path)}))
    with pytest.raises(ConfigError, match="val/delta_m needs train.baseline"):
        check_config(small_config(**{"train.selection_metric": "val/delta_m"}))


@pytest.mark.slow
def test_single_task_baselines_then_a_run_and_a_space_ranked_by_delta_m(tmp_path, monkeypatch, capsys):
    """`distmtl baseline --single-task` trains each task alone and writes the file (refusing to replace it without
    --force); a multi-task run pointed at it reports Δm exactly as the formula gives from its own metrics, may select
    its best epoch by it, and a search space may rank by it."""
    monkeypatch.chdir(tmp_path)
    config = small_config(**{"tasks": ["fine", "shape"], "data.target_fraction": {"shape": 0.5}, "optim.epochs": 1,
                             "weighting.weights": {"shape": 2.0}})
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump()))
    out = tmp_path / "baseline.json"
    args = ["baseline", "--single-task", "--config", str(config_file), "--out", str(out), "--seeds", "2",
            "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(args) == 0
    saved = json.loads(out.read_text())
    assert set(saved["tasks"]) == {"fine", "shape"} and saved["tasks"]["shape"]["mode"] == "min"
    assert saved["tasks"]["fine"]["n"] == 2 and saved["source"]["seeds"] == 2
    before = out.read_text()
    capsys.readouterr()
    assert main(args) == 2 and out.read_text() == before
    assert "pass --force" in capsys.readouterr().err

    baseline = Baseline.load(out)
    run = config_from_dict({**config.model_dump(), "train": {**config.train.model_dump(), "baseline": str(out),
                                                             "selection_metric": "val/delta_m"}})
    reporter = LocalReporter(tmp_path / "run")
    final = train(run, reporter)
    assert final["val/delta_m"] == pytest.approx(baseline.delta_m(final, "val"))
    assert final["test/delta_m"] == pytest.approx(baseline.delta_m(final, "test"))
    assert final["best/val/delta_m"] == final["val/delta_m"]  # one epoch: it is the best

    space_file = tmp_path / "space.yaml"
    space_file.write_text(yaml.safe_dump({"base": "run.yaml", "metric": "val/delta_m", "parameters": {
        "weighting.weights.shape": {"type": "choice", "values": [0.5, 2.0]}}}))
    space = Space(space_file, {"train.baseline": str(out)})
    assert space.mode == "max"
    with pytest.raises(ConfigError, match="metric 'val/delta_m' is not reported"):
        Space(space_file)
