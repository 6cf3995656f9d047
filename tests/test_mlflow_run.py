"""`MlflowRun`, the one way distmtl writes to MLflow: as a context manager it ends its run FINISHED, FAILED with the
reason, or KILLED, by how its block ends; a run ended inside the block keeps that ending; every run says which
distmtl command it came from, as MLflow's UI shows a run's source."""

import pytest
from mlflow.tracking import MlflowClient

from distmtl.errors import RunFailed
from distmtl.tracking import FAILURE_TAG, MlflowRun


def test_a_runs_block_ends_it_finished_failed_with_the_reason_or_killed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with MlflowRun(uri, "ends", "fine", {"optim": {"lr": 0.1}}, command="train") as run:
        run.log_metrics({"val/loss": 1.0}, step=0)
    with pytest.raises(ValueError), MlflowRun(uri, "ends", "broken", {}):
        raise ValueError("no such file: data.h5\nits traceback")
    with pytest.raises(KeyboardInterrupt), MlflowRun(uri, "ends", "interrupted", {}):
        raise KeyboardInterrupt
    with MlflowRun(uri, "ends", "told", {}) as run:
        run.finish("KILLED")  # e.g. a sweep that stopped before its end
    with pytest.raises(RunFailed), MlflowRun(uri, "ends", "diverged", {}) as run:
        run.fail("diverged at epoch 0, step 3: loss nan")
        raise RunFailed("diverged at epoch 0, step 3: loss nan (run 'x', MLflow run y marked FAILED)")

    client = MlflowClient(uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("ends").experiment_id])}
    assert {name: r.info.status for name, r in runs.items()} == {
        "fine": "FINISHED", "broken": "FAILED", "interrupted": "KILLED", "told": "KILLED", "diverged": "FAILED"}
    assert runs["broken"].data.tags[FAILURE_TAG] == "no such file: data.h5"
    assert runs["diverged"].data.tags[FAILURE_TAG] == "diverged at epoch 0, step 3: loss nan"
    assert not {FAILURE_TAG} & (set(runs["fine"].data.tags) | set(runs["interrupted"].data.tags))
    assert runs["fine"].data.metrics == {"val/loss": 1.0} and runs["fine"].data.params == {"optim.lr": "0.1"}


def test_a_run_names_the_command_it_came_from_as_its_source(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with MlflowRun(uri, "sources", "trial", command="tune") as tuned, MlflowRun(uri, "sources", "other") as other:
        pass
    client = MlflowClient(uri)
    tags = client.get_run(tuned.run_id).data.tags
    assert (tags["mlflow.source.name"], tags["mlflow.source.type"], tags["distmtl.command"]) == (
        "distmtl tune", "LOCAL", "tune")
    assert client.get_run(other.run_id).data.tags["mlflow.source.name"] == "distmtl"
