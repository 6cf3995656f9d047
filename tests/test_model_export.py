"""The best model in MLflow: every run logs its best-epoch model; `distmtl evaluate` scores it again, also after
it was registered."""

import re

from mlflow.tracking import MlflowClient

from distmtl.cli import main
from distmtl.engine import train
from distmtl.recipes.execution import TrackingReporter
from distmtl.tracking import MlflowRun
from distmtl.tracking.model_export import register_trial_model

from conftest import small_config


def printed_metrics(text):
    return {k: float(v) for k, v in re.findall(r"^\s+(test/\S+)\s+(-?[\d.]+)$", text, re.M)}


def test_a_logged_model_scores_its_runs_test_metrics_again_and_can_be_registered(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = small_config()
    run = MlflowRun(uri, "models", "trial-abc", config.model_dump(), tags={"distmtl.trial_id": "abc"})
    final = train(config, TrackingReporter(run, tmp_path / "out"))
    run.finish()
    files = {a.path for a in MlflowClient(uri).list_artifacts(run.real_run_id, "artifacts/model")}
    assert {"artifacts/model/MLmodel", "artifacts/model/config.yaml", "artifacts/model/input_example.json"} <= files

    expected = {k: round(v, 4) for k, v in final.items() if k.startswith("test/")}
    assert main(["evaluate", "--model", f"runs:/{run.real_run_id}/artifacts/model", "--mlflow-uri", uri]) == 0
    assert printed_metrics(capsys.readouterr().out) == expected

    model_uri, version = register_trial_model(uri, "models", "abc", "best-small")
    assert model_uri == f"runs:/{run.real_run_id}/artifacts/model" and version == "1"
    assert main(["evaluate", "--model", "models:/best-small/1", "--mlflow-uri", uri]) == 0
    assert printed_metrics(capsys.readouterr().out) == expected


def test_a_model_that_does_not_exist_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--model", str(tmp_path / "nothing"), "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("distmtl: error: --model") and "\n" not in err
