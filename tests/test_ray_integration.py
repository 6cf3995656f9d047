"""End to end on a real local Ray cluster: `distmtl train` (2 DDP workers) and a 2-trial `distmtl tune`
sweep (2 workers per trial) into a temporary MLflow SQLite store."""

import pytest
import yaml
from mlflow.tracking import MlflowClient

from distmtl.cli import main
from distmtl.engine.checkpoint import load_checkpoint
from distmtl.tune.hypervolume import hypervolume

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
    assert run.data.tags["distmtl.workers"] == "2" and run.data.tags["mlflow.source.name"] == "distmtl train"
    (model,) = client.search_logged_models([run.info.experiment_id])  # the best model, exported by the driver
    assert model.source_run_id == run.info.run_id and "test/fine/accuracy" in {m.key for m in model.metrics}

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
        assert run.data.tags["distmtl.version"] and run.inputs.dataset_inputs[0].dataset.name == "synthetic"
    models = client.search_logged_models([parent.info.experiment_id])  # every trial's best model, ASHA-stopped or not
    assert sorted(m.source_run_id for m in models) == sorted(r.info.run_id for r in runs)
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
               "--storage", str(tmp_path / "results"), "--mlflow-uri", uri, "--experiment", "pareto",
               *tiny_overrides()])
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
        {"artifacts/confusion_matrix@fine_epoch001.png",
         "artifacts/segmentation_examples@mask_epoch001.png", "artifacts/detection_examples@bbox_epoch001.png"} <= files
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert model.source_run_id == run.info.run_id


def test_a_pareto_sweep_under_multi_objective_asha_stops_a_dominated_trial_and_logs_hypervolume(ray_cluster, tmp_path,
                                                                                                 capsys):
    """Two objectives (colour accuracy and shape R², both maximised), trials one at a time, the learning rate
    either one that learns or one that leaves the network as initialised; the seeded sampler proposes a learning
    trial first. At the first rung a trial that did not learn is dominated by one that did and stops: its run is
    tagged with the scheduler and epoch. The front no finished trial dominates still holds; the parent run has the
    hypervolume from the stated reference point after each finished trial."""
    space = tmp_path / "moasha.yaml"
    space.write_text(yaml.safe_dump({
        "base": str(REPO / "search_spaces/configs/quick.yaml"), "metric": ["val/colour/accuracy", "val/shape/r2"],
        "num_samples": 4, "searcher": {"name": "optuna", "sampler": "random", "seed": 0},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2}, "reference_point": [0.0, -10.0],
        "parameters": {"optim.lr": {"type": "choice", "values": [1.0e-9, 0.02]}}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["tune", "--space", str(space), "--workers-per-trial", "2", "--max-concurrent", "1",
               "--storage", str(tmp_path / "results"), "--mlflow-uri", uri, "--experiment", "moasha",
               "--set", "data.num_samples=600", "--set", "data.image_size=16", "--set", "optim.epochs=4"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "stopped by moasha after" in out and "hypervolume" in out and "(stated in the space)" in out

    client = MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name("moasha").experiment_id])
    (parent,) = [r for r in found if "distmtl.sweep_of" in r.data.tags]
    trials = [r for r in found if r is not parent]
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)
    stopped = [r for r in trials if r.data.tags.get("distmtl.stopped_by") == "moasha"]
    assert stopped
    for run in stopped:
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "val/colour/accuracy")]
        assert max(epochs) == int(run.data.tags["distmtl.stopped_at_epoch"]) < 3
    points = {r.data.tags["distmtl.trial_id"]: (r.data.metrics["val/colour/accuracy"], r.data.metrics["val/shape/r2"])
              for r in trials}
    front = set(parent.data.tags["distmtl.pareto_trials"].split(","))
    assert front
    for member in front:
        assert not any(all(o >= m for o, m in zip(points[other], points[member])) and points[other] != points[member]
                       for other in points)
    history = client.get_metric_history(parent.info.run_id, "pareto/hypervolume")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    final = max(history, key=lambda m: m.step).value
    assert final == pytest.approx(hypervolume(list(points.values()), [0.0, -10.0], ["max", "max"]), rel=1e-6)
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == sorted(m.value for m in history)


def test_a_sweep_over_the_weighting_method_samples_each_method_s_settings_only_where_it_applies(ray_cluster, tmp_path,
                                                                                                   capsys):
    """`weighting.method` as a categorical choice and CAGrad's c conditional on it, 2 trials of 2 DDP workers (the
    seeded random sampler picks pcgrad, then cagrad): each trial's MLflow run holds its method, c only where the
    method is cagrad, and the per-epoch effective task weights."""
    space = tmp_path / "methods.yaml"
    space.write_text(yaml.safe_dump({
        "base": str(REPO / "search_spaces/configs/quick.yaml"), "metric": "val/loss_unweighted", "num_samples": 2,
        "searcher": {"sampler": "random", "seed": 0}, "scheduler": {"name": "fifo"},
        "parameters": {"weighting.method": {"type": "choice", "values": ["fixed", "pcgrad", "cagrad"]},
                       "weighting.c": {"type": "uniform", "low": 0.1, "high": 0.9,
                                       "when": {"weighting.method": "cagrad"}}},
    }, sort_keys=False))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["tune", "--space", str(space), "--workers-per-trial", "2", "--storage", str(tmp_path / "results"),
                 "--mlflow-uri", uri, "--experiment", "methods", *tiny_overrides()]) == 0
    client = MlflowClient(uri)
    runs = [r for r in client.search_runs([client.get_experiment_by_name("methods").experiment_id])
            if "distmtl.trial_id" in r.data.tags]
    assert sorted(r.data.params["weighting.method"] for r in runs) == ["cagrad", "pcgrad"]
    for run in runs:
        method = run.data.params["weighting.method"]
        assert run.info.status == "FINISHED" and run.data.tags["searched.weighting.method"] == method
        assert ("weighting.c" in run.data.params) == (method == "cagrad")
        assert ("searched.weighting.c" in run.data.tags) == (method == "cagrad")
        assert [m.step for m in client.get_metric_history(run.info.run_id, "weight/fine")] == [0, 1]
