"""End to end on a real local Ray cluster: `distmtl train` (2 DDP workers) and a 2-trial `distmtl tune`
sweep (2 workers per trial) into a temporary MLflow SQLite store."""

import pytest
import yaml
from mlflow.tracking import MlflowClient

from distmtl.cli import main

from conftest import REPO

pytestmark = pytest.mark.ray

SIX = {"weighting.weights.shape", "optim.weight_decay", "model.dropout", "data.noise_level", "model.bottleneck",
       "weighting.temperature"}
TASK_METRICS = {"val/fine/accuracy", "val/colour/accuracy", "val/shape/mse", "val/shape/r2", "val/shape/med"}


def tiny_overrides():
    return ["--set", "data.num_samples=240", "--set", "data.image_size=16", "--set", "optim.epochs=2"]


def test_train_runs_two_ddp_workers_and_tracks_the_run(ray_cluster, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["train", "--config", str(REPO / "search_spaces/configs/quick.yaml"), "--workers", "2",
               "--storage", str(tmp_path / "results"), "--mlflow-uri", uri, "--name", "run1", *tiny_overrides()])
    assert rc == 0
    assert "test/fine/accuracy" in capsys.readouterr().out
    checkpoints = [p for p in (tmp_path / "results" / "run1").glob("checkpoint_*") if p.is_dir()]
    assert len(checkpoints) == 2 and all((c / "checkpoint.pt").is_file() for c in checkpoints)

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quick").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["optim.epochs"] == "2"
    assert TASK_METRICS | {"test/fine/accuracy"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/fine/accuracy")] == [0, 1]
    assert run.data.tags["distmtl.workers"] == "2"


def test_tune_sweep_logs_one_run_per_trial_with_params_and_per_task_metrics(ray_cluster, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["tune", "--space", str(REPO / "search_spaces/quick.yaml"), "--num-samples", "2",
               "--workers-per-trial", "2", "--storage", str(tmp_path / "results"), "--mlflow-uri", uri,
               "--experiment", "sweep", *tiny_overrides()])
    assert rc == 0
    out = capsys.readouterr().out
    assert "sweep 'sweep': 2 trial(s)" in out and "best trial" in out

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert len(runs) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        assert SIX <= set(run.data.params)
        assert TASK_METRICS <= set(run.data.metrics)
        assert run.data.params["data.image_size"] == "16"
        local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / run.info.run_id))
        with open(local) as f:
            config = yaml.safe_load(f)
        assert str(config["model"]["bottleneck"]) == run.data.params["model.bottleneck"]
    trained = {p.name for p in (tmp_path / "results" / "sweep-train").iterdir()}
    assert trained == {run.data.tags["distmtl.trial_id"] for run in runs}


def test_cross_validation_runs_k_folds_as_child_runs(ray_cluster, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["train", "--config", str(REPO / "search_spaces/configs/quick.yaml"), "--cv", "3", "--workers", "2",
               "--storage", str(tmp_path / "results"), "--mlflow-uri", uri, "--name", "cv", *tiny_overrides(),
               "--set", "optim.epochs=1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "cross-validation over 3 folds" in out and "fine/accuracy" in out and "±" in out
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("quick").experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == "cv"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["distmtl.cv_fold"] for r in children) == ["0", "1", "2"]
    assert all(r.data.params["data.cv_folds"] == "3" for r in children)
    assert {"cv/test/fine/accuracy", "cv/test/fine/accuracy/std"} <= set(parent.data.metrics)


def test_cross_stitch_trial_logs_alpha_figures_and_parameter_counts(ray_cluster, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["tune", "--space", str(REPO / "search_spaces/cross_stitch.yaml"), "--num-samples", "1",
               "--storage", str(tmp_path / "results"), "--mlflow-uri", uri, "--experiment", "cs",
               "--set", "data.num_samples=160", "--set", "data.image_size=32", "--set", "optim.epochs=2",
               "--set", "model.channels=[8,16]", "--set", "model.bottleneck=16"])
    assert rc == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cs").experiment_id])
    assert {"val/mask/miou", "val/bbox/iou", "val/fine/accuracy", "params/total", "params/mask",
            "cross_stitch/stage0/same"} <= set(run.data.metrics)
    files = [f.path for f in client.list_artifacts(run.info.run_id, "artifacts")]
    assert files == ["artifacts/cross_stitch_alpha_epoch000.png", "artifacts/cross_stitch_alpha_epoch001.png"]
