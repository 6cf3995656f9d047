"""MLflow going away mid-run, in-process against a real MLflow tracking server (MLflow's own Flask app,
served on a local port): records are kept in a journal, the failure is reported once, and they are
written in order when the server answers again or by ``distmtl mlflow replay``."""

import json
import logging
import shutil
import threading

import pytest
from mlflow.tracking import MlflowClient

from distmtl.cli import main
from distmtl.logs import configure_logging
from distmtl.tracking import MlflowRun
from distmtl.tracking.fallback import FallbackWriter
from distmtl.tracking.model_export import download_model

from conftest import free_port


class TrackingServer:
    """MLflow's tracking server app on a local port, which a test can stop and start again, or make answer
    503 (unavailable) after ``fail_after`` more requests."""

    def __init__(self, store: str, artifacts: str, monkeypatch) -> None:
        monkeypatch.setenv("_MLFLOW_SERVER_FILE_STORE", store)
        monkeypatch.setenv("_MLFLOW_SERVER_ARTIFACT_ROOT", artifacts)
        from mlflow.server import app

        self.app, self.port = app, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.fail_after: int | None = None

    def __call__(self, environ, start_response):
        if self.fail_after is not None:
            self.fail_after -= 1
            if self.fail_after < 0:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"unavailable"]
        return self.app(environ, start_response)

    def start(self) -> None:
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", self.port, self, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture(autouse=True)
def progress_on_stderr():
    configure_logging(logging.INFO)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server (and store) for the module — MLflow's app keeps its store once made; tests use their own
    experiment names."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with pytest.MonkeyPatch.context() as patch:
        served = TrackingServer(f"sqlite:///{root / 'server.db'}", str(root / "artifacts"), patch)
        served.start()
        yield served
        served.stop()


def test_epochs_logged_while_the_server_is_away_arrive_in_order_when_it_returns(server, tmp_path, capsys):
    journal = tmp_path / "journal" / "sweep.jsonl"
    run = MlflowRun(server.uri, "comes-back", "trial-a", {"optim": {"lr": 0.1}},
                    writer=FallbackWriter(server.uri, journal, retry_s=0))
    run.log_epoch({"epoch": 0, "val/loss": 1.0})
    server.stop()
    checkpoint = tmp_path / "checkpoint_1"
    (checkpoint / "artifacts").mkdir(parents=True)
    (checkpoint / "artifacts" / "alpha_epoch001.png").write_bytes(b"\x89PNG not really")
    run.log_epoch({"epoch": 1, "val/loss": 0.5})
    run.log_checkpoint_artifacts(checkpoint)
    shutil.rmtree(checkpoint)  # a checkpoint may be gone by the time MLflow is back: the journal kept a copy
    run.log_epoch({"epoch": 2, "val/loss": 0.4})
    assert run.writer.offline and journal.is_file()
    assert [json.loads(line)["op"] for line in journal.read_text().splitlines()[1:]] == ["log_batch", "log_artifact",
                                                                                      "log_batch"]
    server.start()
    run.log_epoch({"epoch": 3, "val/loss": 0.3})
    run.finish()

    assert not run.writer.offline and not journal.exists()
    err = capsys.readouterr().err
    assert err.count("failed (") == 1 and "training goes on" in err and "answers again: wrote 3" in err
    client = MlflowClient(server.uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "val/loss")] == [
        (0, 1.0), (1, 0.5), (2, 0.4), (3, 0.3)]
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert [f.path for f in client.list_artifacts(run.run_id, "artifacts")] == ["artifacts/alpha_epoch001.png"]


def test_an_experiment_gets_a_description_unless_it_has_one(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    client.create_experiment("mine", tags={"mlflow.note.content": "written by hand"})
    for name in ("mine", "new"):
        MlflowRun(store, name, "run", {}, experiment_description="sweeps of space.yaml").finish()
    assert client.get_experiment_by_name("mine").tags["mlflow.note.content"] == "written by hand"
    assert client.get_experiment_by_name("mine").tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment_by_name("new").tags["mlflow.note.content"] == "sweeps of space.yaml"


def test_a_run_begun_while_the_server_is_down_is_replayed_by_the_cli_into_another_store(tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    journal = tmp_path / "sweep.jsonl"
    writer = FallbackWriter(dead, journal, retry_s=3600)
    run = MlflowRun(dead, "exp", "trial-b", {"model": {"dropout": 0.2}}, tags={"distmtl.trial_id": "b"}, writer=writer)
    assert run.run_id.startswith("offline-")
    for epoch in range(3):
        run.log_epoch({"epoch": epoch, "val/loss": 1.0 / (epoch + 1), "train/loss": 2.0})
    run.set_tags({"distmtl.failure_reason": "diverged at epoch 2, step 7: loss nan"})
    run.finish("FAILED")
    assert not writer.close()  # still down: says how to replay
    err = capsys.readouterr().err
    assert err.count("failed (") == 1 and f"distmtl mlflow replay {journal}" in err

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["mlflow", "replay", str(journal), "--mlflow-uri", store]) == 0
    assert "wrote 8 record(s)" in capsys.readouterr().out and not journal.exists()
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("exp")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs table
    (replayed,) = client.search_runs([experiment.experiment_id])
    assert replayed.info.status == "FAILED" and replayed.info.run_name == "trial-b"
    assert replayed.data.params["model.dropout"] == "0.2" and replayed.data.tags["distmtl.trial_id"] == "b"
    assert replayed.data.tags["distmtl.failure_reason"].startswith("diverged at epoch 2")
    assert [m.step for m in client.get_metric_history(replayed.info.run_id, "val/loss")] == [0, 1, 2]
    assert main(["mlflow", "replay", str(journal), "--mlflow-uri", store]) == 2  # nothing is applied twice


def test_a_replay_cut_short_by_the_server_keeps_the_rest_and_never_repeats_a_record(tmp_path, server):
    journal = tmp_path / "j.jsonl"
    dead = f"http://127.0.0.1:{free_port()}"
    run = MlflowRun(dead, "cut-short", "trial-c", {"optim": {"lr": 0.1}},
                    writer=FallbackWriter(dead, journal, retry_s=3600))
    for epoch in range(3):
        run.log_epoch({"epoch": epoch, "val/loss": 1.0 / (epoch + 1)})
    run.finish()
    kept = len(journal.read_text().splitlines())
    server.fail_after = 4  # the experiment lookup, its creation, the run's creation, its params; then 503s
    assert main(["mlflow", "replay", str(journal), "--mlflow-uri", server.uri]) == 1
    rest = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    assert rest[0]["op"] == "alias" and len(rest) < kept  # the run it created is remembered, not created again
    server.fail_after = None
    assert main(["mlflow", "replay", str(journal), "--mlflow-uri", server.uri]) == 0
    client = MlflowClient(server.uri)
    (only,) = client.search_runs([client.get_experiment_by_name("cut-short").experiment_id])
    assert only.data.params == {"optim.lr": "0.1"} and only.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(only.info.run_id, "val/loss")] == [0, 1, 2]


def test_a_record_the_store_refuses_is_reported_and_does_not_stop_the_others(server, tmp_path, capsys):
    writer = FallbackWriter(server.uri, tmp_path / "j.jsonl")
    run = MlflowRun(server.uri, "refused", "trial-d", {"optim": {"lr": 0.1}}, writer=writer)
    writer.write({"op": "log_batch", "run": run.run_id, "params": {"optim.lr": "0.2"}})  # a param cannot change
    run.log_epoch({"epoch": 0, "val/loss": 1.0})
    assert not writer.offline and not (tmp_path / "j.jsonl").exists()
    assert "refused a record (log_batch)" in capsys.readouterr().err
    assert MlflowClient(server.uri).get_run(run.run_id).data.metrics == {"epoch": 0.0, "val/loss": 1.0}


def test_a_model_logged_while_the_server_is_down_is_replayed_as_the_runs_logged_model(tmp_path):
    import mlflow.pytorch
    import torch

    dead = f"http://127.0.0.1:{free_port()}"
    journal = tmp_path / "sweep.jsonl"
    writer = FallbackWriter(dead, journal, retry_s=3600)
    with MlflowRun(dead, "exp", "trial-m", {"optim": {"lr": 0.1}}, writer=writer) as run:
        for epoch in range(2):
            run.log_epoch({"epoch": epoch, "val/loss": 1.0 / (epoch + 1), "test/fine/accuracy": 0.5 + epoch / 4})
        folder = tmp_path / "model"
        mlflow.pytorch.save_model(torch.nn.Linear(2, 3), str(folder), serialization_format="pickle")
        run.log_model(folder, "model")
        shutil.rmtree(folder)  # the saved model may be temporary: the journal kept a copy
    assert [json.loads(line)["op"] for line in journal.read_text().splitlines()[-2:]] == ["log_model", "status"]

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["mlflow", "replay", str(journal), "--mlflow-uri", store]) == 0 and not journal.exists()
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("exp").experiment_id
    (replayed,) = client.search_runs([experiment])
    (model,) = client.search_logged_models([experiment])
    assert model.source_run_id == replayed.info.run_id and model.name == "model"
    assert {m.key: (m.step, m.value) for m in model.metrics} == {
        "epoch": (1, 1.0), "val/loss": (1, 0.5), "test/fine/accuracy": (1, 0.75)}  # the run's last epoch
    folder = download_model(f"models:/{model.model_id}", str(tmp_path / "downloaded"), store)
    assert mlflow.pytorch.load_model(str(folder)).out_features == 3
