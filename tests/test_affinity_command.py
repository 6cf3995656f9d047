"""`distmtl affinity` end to end on a real local Ray cluster: one short hard-sharing run on 2 DDP workers, the
affinity matrices logged to MLflow every epoch, and the chosen groupings in the last line's JSON."""

import json

import pytest
from mlflow.tracking import MlflowClient

from distmtl.cli import main

from conftest import REPO

pytestmark = pytest.mark.ray


def test_affinity_prints_matrices_and_groupings_and_logs_them_per_epoch(ray_cluster, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["affinity", "--config", str(REPO / "search_spaces/configs/selective_synthetic.yaml"), "--workers", "2",
               "--epochs", "2", "--every", "3", "--budget", "2", "--budget", "0.5x",
               "--storage", str(tmp_path / "results"),
               "--mlflow-uri", uri, "--name", "aff", "--set", "data.num_samples=300", "--set", "data.image_size=16",
               "--set", "model.channels=[8,16]", "--set", "model.bottleneck=16"])
    assert rc == 0
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])
    tasks = ["fine", "coarse", "shape", "colour", "texture"]
    assert result["tasks"] == tasks
    assert len(result["affinity"]) == 5 and all(len(row) == 5 for row in result["affinity"])
    assert set(result["groupings"]) == {"2", "0.5x"}
    for groups in result["groupings"].values():
        named = [t for group in groups for t in group]
        assert sorted(named) == sorted(tasks)  # every task once
    assert len(result["groupings"]["2"]) == 2 and len(result["groupings"]["0.5x"]) <= 2  # 3 branches exceed half
    assert result["cost_epochs"] > 2
    assert any(line.startswith("lookahead affinity") for line in printed)
    assert set(result["matrices"]) == {"lookahead", "lookahead_net", "cosine"}

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("selective_synthetic").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["model.architecture"] == "hard_sharing"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "affinity/lookahead/fine/coarse")] == [0, 1]
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "artifacts")}
    assert {"artifacts/task_affinity_epoch000.json", "artifacts/task_affinity_epoch001.png"} <= logged
