"""A Train worker that dies mid-run: Ray Train restarts the worker group, the engine resumes from the
latest checkpoint, and the run finishes as one MLflow run with every epoch logged once."""

import pytest
from mlflow.tracking import MlflowClient

from distmtl.cli import main
from distmtl.engine.faults import ENV_VAR, InjectedFault
from distmtl.errors import DistmtlError

from conftest import REPO


def test_fault_spec_parses_and_rejects_garbage(tmp_path):
    fault = InjectedFault.parse(f"rank=1,epoch=2,once={tmp_path / 'm'}")
    assert (fault.rank, fault.epoch, fault.batch) == (1, 2, 0)
    fault.maybe_fire(0, 2, 0)  # another rank: nothing happens
    assert not (tmp_path / "m").exists()
    with pytest.raises(DistmtlError, match="rank=R,epoch=E"):
        InjectedFault.parse("rank=one")


@pytest.mark.ray
def test_a_killed_worker_is_replaced_and_the_run_resumes(ray_cluster, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "fired"
    monkeypatch.setenv(ENV_VAR, f"rank=1,epoch=1,batch=2,once={marker}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["train", "--config", str(REPO / "search_spaces/configs/quick.yaml"), "--workers", "2",
               "--storage", str(tmp_path / "results"), "--mlflow-uri", uri, "--name", "faulty",
               "--set", "data.num_samples=400", "--set", "data.image_size=16", "--set", "optim.epochs=3",
               "--set", "data.batch_size=32"])
    assert rc == 0 and marker.exists()  # the fault fired, and the run still succeeded
    assert "test/fine/accuracy" in capsys.readouterr().out
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quick").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/fine/accuracy")] == [0, 1, 2]
    assert "test/fine/accuracy" in run.data.metrics
