"""End to end on a real local Ray cluster: `distmtl train` (2 DDP workers) and a 2-trial `distmtl tune`
sweep (2 workers per trial) into a temporary MLflow SQLite store."""

import pytest
import yaml
from mlflow.tracking import MlflowClient

from distmtl.cli import main
from distmtl.engine.checkpoint import load_checkpoint

from conftest import REPO

pytestmark = pytest.mark.ray

SIX = {"weighting.weights.shape", "optim.weight_decay", "model.dropout", "data.noise_level", "model.bottleneck",
       "weighting.temperature"}
TASK_METRICS = {"val/fine/accuracy", "val/colour/accuracy", "val/shape/mse", "val/shape/r2", "val/shape/med"}


def tiny_overrides():
    return ["--set", "data.num_samples=240", "--set", "data.image_size=16", "--set", "optim.epochs=2"]


def test_train_runs_two_ddp_workers_tracks_the_run_and_resumes_from_a_checkpoint(ray_cluster, tmp_path, capsys):
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

    first = min(checkpoints, key=lambda c: load_checkpoint(c).epoch)  # epoch 0
    rc = main(["train", "--config", str(REPO / "search_spaces/configs/quick.yaml"), "--workers", "2",
               "--storage", str(tmp_path / "results"), "--mlflow-uri", uri, "--name", "resumed", "--resume", str(first),
               *tiny_overrides(), "--set", "optim.epochs=4", "--set", "train.keep_checkpoints=1"])
    assert rc == 0
    (kept,) = [p for p in (tmp_path / "results" / "resumed").glob("checkpoint_*") if p.is_dir()]
    assert load_checkpoint(kept).epoch == 3  # keep_checkpoints=1: of the resumed epochs, the last remains
    (resumed,) = [r for r in client.search_runs([run.info.experiment_id]) if r.info.run_name == "resumed"]
    history = client.get_metric_history(resumed.info.run_id, "val/fine/accuracy")
    assert [m.step for m in history] == [1, 2, 3]  # continued after the checkpoint's epoch


def test_tune_sweep_logs_one_run_per_trial_with_params_and_per_task_metrics(ray_cluster, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["tune", "--space", str(REPO / "search_spaces/quick.yaml"), "--num-samples", "2",
               "--workers-per-trial", "2", "--storage", str(tmp_path / "results"), "--mlflow-uri", uri,
               "--experiment", "sweep", "--register", "sweep-best", *tiny_overrides()])
    assert rc == 0
    out = capsys.readouterr().out
    assert "sweep 'sweep': 2 trial(s)" in out and "best trial" in out
    assert "as model 'sweep-best' version 1" in out

    client = MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    (parent,) = [r for r in found if "distmtl.sweep_of" in r.data.tags]
    runs = [r for r in found if r is not parent]
    assert len(runs) == 2 and {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.tags["distmtl.best_trial_id"] in out
    for run in runs:
        assert run.info.status == "FINISHED"
        assert SIX <= set(run.data.params)
        assert TASK_METRICS <= set(run.data.metrics)
        assert run.data.params["data.image_size"] == "16"
        local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / run.info.run_id))
        with open(local) as f:
            config = yaml.safe_load(f)
        assert str(config["model"]["bottleneck"]) == run.data.params["model.bottleneck"]
        assert "artifacts/model/MLmodel" in {a.path for a in client.list_artifacts(run.info.run_id, "artifacts/model")}
        assert run.data.tags["distmtl.version"] and run.inputs.dataset_inputs[0].dataset.name == "synthetic"
    (registered,) = client.search_model_versions("name = 'sweep-best'")
    assert registered.run_id == next(r.info.run_id for r in runs
                                     if r.data.tags["distmtl.trial_id"] == parent.data.tags["distmtl.best_trial_id"])
    trained = {p.name for p in (tmp_path / "results" / "sweep-train").iterdir()}
    assert trained == {run.data.tags["distmtl.trial_id"] for run in runs}


def test_a_two_objective_sweep_ends_with_a_pareto_front_no_finished_trial_dominates(ray_cluster, tmp_path, capsys):
    """search_spaces/pareto.yaml (fine accuracy and shape R², both maximised): the front is printed, its members'
    runs are tagged, and by the metrics MLflow recorded no member is dominated by another finished trial while
    every other finished trial is dominated by a member."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["tune", "--space", str(REPO / "search_spaces/pareto.yaml"), "--num-samples", "3",
               "--storage", str(tmp_path / "results"), "--mlflow-uri", uri, "--experiment", "pareto", *tiny_overrides()])
    assert rc == 0
    assert "Pareto front:" in capsys.readouterr().out

    client = MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name("pareto").experiment_id])
    (parent,) = [r for r in found if "distmtl.sweep_of" in r.data.tags]
    trials = [r for r in found if r is not parent and r.info.status == "FINISHED"]
    assert len(trials) == 3
    points = {r.info.run_id: (r.data.metrics["val/fine/accuracy"], r.data.metrics["val/shape/r2"]) for r in trials}
    front = {r.info.run_id for r in trials if r.data.tags.get("distmtl.pareto") == "true"}
    assert front and {r.data.tags["distmtl.trial_id"] for r in trials if r.info.run_id in front} == \
        set(parent.data.tags["distmtl.pareto_trials"].split(","))

    def dominated(p, by):
        return by[0] >= p[0] and by[1] >= p[1] and by != p

    for run_id in front:
        assert not any(dominated(points[run_id], points[other]) for other in points if other != run_id)
    for run_id in set(points) - front:
        assert any(dominated(points[run_id], points[member]) for member in front)
    assert {"pareto.md", "pareto_front.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}


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
    (run,) = client.search_runs([client.get_experiment_by_name("cs").experiment_id], "tags.`distmtl.trial_id` != ''")
    assert {"val/mask/miou", "val/bbox/iou", "val/fine/accuracy", "params/total", "params/mask",
            "cross_stitch/stage0/same"} <= set(run.data.metrics)
    files = {f.path for f in client.list_artifacts(run.info.run_id, "artifacts")}
    assert {f"artifacts/cross_stitch_alpha_epoch00{e}.{kind}" for e in (0, 1) for kind in ("json", "png")} | \
        {"artifacts/confusion_matrix@fine_epoch001.png", "artifacts/model",
         "artifacts/segmentation_examples@mask_epoch001.png", "artifacts/detection_examples@bbox_epoch001.png"} <= files
