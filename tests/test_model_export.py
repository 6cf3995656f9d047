"""The best model in MLflow: every trained run logs its best-epoch model as an MLflow 3 logged model, linked to the
run and to its metrics; `distmtl evaluate` scores it again, also after it was registered."""

import re

from mlflow.tracking import MlflowClient

from distmtl.cli import main
from distmtl.recipes.base import Variant
from distmtl.recipes.execution import run_cell
from distmtl.tracking import MlflowRun
from distmtl.tracking.model_export import register_trial_model

from conftest import small_config


def printed_metrics(text):
    return {k: float(v) for k, v in re.findall(r"^\s+(test/\S+)\s+(-?[\d.]+)$", text, re.M)}


def test_a_runs_best_model_is_a_logged_model_that_scores_its_test_metrics_again_and_registers(tmp_path, monkeypatch,
                                                                                              capsys):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # models:/ URIs resolve in --mlflow-uri's store
    config = small_config()
    with MlflowRun(uri, "models", "trial-abc", config.model_dump(), tags={"distmtl.trial_id": "abc"}) as run:
        final = run_cell(Variant("small", "generator", "small.yaml"), config, run, tmp_path / "out").metrics
    client = MlflowClient(uri)
    logged = client.get_run(run.real_run_id)
    assert logged.info.status == "FINISHED"
    assert not client.list_artifacts(run.real_run_id, "artifacts/model")  # no longer plain run artifacts

    (model,) = client.search_logged_models([logged.info.experiment_id])
    assert model.name == "model" and model.source_run_id == run.real_run_id and model.status.name == "READY"
    last = config.optim.epochs - 1
    assert [(o.model_id, o.step) for o in logged.outputs.model_outputs] == [(model.model_id, last)]
    linked = {m.key: m.value for m in model.metrics}
    assert {m.run_id for m in model.metrics} == {run.real_run_id} and {m.step for m in model.metrics} == {last}
    tests = {k: v for k, v in final.items() if k.startswith("test/")}
    assert tests and all(linked[k] == v for k, v in tests.items()) and linked["epoch"] == last
    assert model.params["optim.epochs"] == str(config.optim.epochs)
    assert [m.step for m in client.get_metric_history(run.real_run_id, "test/loss")] == [last]  # not logged again

    expected = {k: round(v, 4) for k, v in tests.items()}
    for uri_form in (f"models:/{model.model_id}", f"runs:/{run.real_run_id}/model",
                     f"runs:/{run.real_run_id}/artifacts/model"):  # the last: where models were before logged models
        assert main(["evaluate", "--model", uri_form, "--mlflow-uri", uri]) == 0
        assert printed_metrics(capsys.readouterr().out) == expected, uri_form

    model_uri, version = register_trial_model(uri, "models", "abc", "best-small")
    assert model_uri == f"models:/{model.model_id}" and version == "1"
    (registered,) = client.search_model_versions("name = 'best-small'")
    assert registered.run_id == run.real_run_id
    assert registered.source == model.artifact_location  # the version is the logged model's files
    assert register_trial_model(uri, "models", "abc", "best-small")[1] == "2"  # a new version of the same name
    assert main(["evaluate", "--model", "models:/best-small/1", "--mlflow-uri", uri]) == 0
    assert printed_metrics(capsys.readouterr().out) == expected


def test_a_model_that_does_not_exist_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--model", str(tmp_path / "nothing"),
                 "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("distmtl: error: --model") and "\n" not in err
