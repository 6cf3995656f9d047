"""Faults on a real local Ray cluster with a real MLflow store: a sweep interrupted with Ctrl-C (SIGINT to a
real `distmtl tune` process) and resumed, and training that diverges in a sweep and in `distmtl train`."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from distmtl.cli import main
from distmtl.engine.checkpoint import TrainingState

from conftest import REPO

pytestmark = pytest.mark.ray

TINY = ["--set", "data.num_samples=240", "--set", "data.image_size=16"]
EPOCHS = 10  # the interrupted trial has some left when Ctrl-C reaches the driver


def runs_by_trial(uri: str, experiment: str) -> dict:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return {r.data.tags["distmtl.trial_id"]: r for r in runs if "distmtl.trial_id" in r.data.tags}


def sweep_parents(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              "tags.`distmtl.sweep_of` != ''")


def test_a_sweep_stopped_with_ctrl_c_resumes_with_every_trial_once_in_mlflow(ray_cluster, tmp_path, capsys):
    quick = yaml.safe_load((REPO / "search_spaces/quick.yaml").read_text())
    space = tmp_path / "quick_fifo.yaml"  # every trial runs all its epochs (ASHA would stop some at random)
    space.write_text(yaml.safe_dump({**quick, "base": str(REPO / "search_spaces" / quick["base"]),
                                     "scheduler": {"name": "fifo"}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["tune", "--space", str(space), "--num-samples", "3", "--workers-per-trial",
            "1", "--max-concurrent", "1", "--storage", str(tmp_path / "results"), "--mlflow-uri", uri,
            "--experiment", "resumable", *TINY, "--set", f"optim.epochs={EPOCHS}"]
    address = ray_cluster.get_runtime_context().gcs_address
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "distmtl", *args, "--address", address], cwd=tmp_path,
                                  stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
        while True:  # until the first trial has finished and the second has logged an epoch (of ten)
            try:
                driver.wait(timeout=0.5)
                pytest.fail("the sweep ended before it was interrupted:\n"
                            + (tmp_path / "driver.log").read_text()[-3000:])
            except subprocess.TimeoutExpired:
                pass
            statuses = [(r.info.status, "epoch" in r.data.metrics) for r in runs_by_trial(uri, "resumable").values()]
            if ("FINISHED", True) in statuses and ("RUNNING", True) in statuses:
                break
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=180) == 130
    output = (tmp_path / "driver.log").read_text()
    assert "continue it with:" in output and "--resume" in output.split("continue it with:")[1]

    assert main(args) == 2  # the same command without --resume would bury the sweep under a new one
    assert "holds an unfinished sweep (1 of 3 trials ended): add --resume" in capsys.readouterr().err

    before = runs_by_trial(uri, "resumable")
    assert sorted(r.info.status for r in before.values()) == ["FINISHED", "KILLED"]  # nothing left RUNNING
    (interrupted,) = [t for t, r in before.items() if r.info.status == "KILLED"]
    (parent,) = sweep_parents(uri, "resumable")
    assert parent.info.status == "KILLED"

    # resumed by a new driver process, as a user would (a long-lived in-process driver that has already run
    # many Ray Train jobs can wait forever for a new trial actor's readiness)
    resumed = subprocess.run([sys.executable, "-m", "distmtl", *args, "--resume", "--address", address], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "sweep 'resumable': 3 trial(s)" in resumed.stdout

    after = runs_by_trial(uri, "resumable")
    assert ([(p.info.run_id, p.info.status) for p in sweep_parents(uri, "resumable")]
            == [(parent.info.run_id, "FINISHED")])
    assert {r.data.tags["mlflow.parentRunId"] for r in after.values()} == {parent.info.run_id}
    assert len(after) == 3 and {r.info.status for r in after.values()} == {"FINISHED"}
    assert {t: r.info.run_id for t, r in after.items() if t in before} == {t: r.info.run_id for t, r in before.items()}
    client = MlflowClient(uri)
    for run in after.values():  # every epoch once, also for the trial that was cut off mid-way
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == list(range(EPOCHS))
    checkpoints = (tmp_path / "results" / "resumable-train" / interrupted).glob("checkpoint_*/checkpoint.pt")
    epochs = sorted(TrainingState.load(c.parent).epoch for c in checkpoints)
    assert set(epochs) == set(range(EPOCHS)) and epochs.count(0) == 1  # continued from its checkpoint
    searched = [tuple(sorted((k, v) for k, v in r.data.tags.items() if k.startswith("searched.")))
                for r in after.values()]
    assert len(set(searched)) == 3  # the searcher kept its state: a fresh TPE(seed 0) would repeat trial 1


def test_a_diverging_trial_fails_with_its_reason_while_the_other_finishes(ray_cluster, tmp_path, capsys):
    space = tmp_path / "lr.yaml"
    space.write_text(f"""
base: {REPO / 'search_spaces/configs/quick.yaml'}
metric: val/loss
num_samples: 2
searcher: {{name: optuna, sampler: tpe, seed: 0}}
scheduler: {{name: asha, grace_period: 1, reduction_factor: 2}}
resources: {{workers_per_trial: 1, gpus_per_worker: 0}}
parameters:
  optim.lr: {{type: choice, values: [1.0e+6, 0.005]}}
""")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["tune", "--space", str(space), "--max-concurrent", "2", "--cpus-per-worker", "0.5",
               "--storage", str(tmp_path / "results"), "--mlflow-uri", uri, "--experiment", "lr", *TINY,
               "--set", "optim.epochs=2"])
    assert rc == 0
    out = capsys.readouterr().out

    runs = {r.data.params["optim.lr"]: r for r in runs_by_trial(uri, "lr").values()}
    assert set(runs) == {"1000000.0", "0.005"}  # seed 0 draws each value once
    failed, finished = runs["1000000.0"], runs["0.005"]
    reason = failed.data.tags["distmtl.failure_reason"]
    assert failed.info.status == "FAILED" and re.fullmatch(r"diverged at epoch 0, step \d+: loss (nan|inf)", reason)
    assert finished.info.status == "FINISHED" and "test/fine/accuracy" in finished.data.metrics
    assert f"1 trial(s) failed:\n  {failed.data.tags['distmtl.trial_id']}: {reason}" in out
    assert f"best trial {finished.data.tags['distmtl.trial_id']}" in out
    trial_dir = tmp_path / "results" / "lr" / f"trial_{failed.data.tags['distmtl.trial_id']}"
    last = json.loads((trial_dir / "result.json").read_text().splitlines()[-1])
    assert last["val/loss"] == float("inf") and last["failure"] == reason  # what Optuna and ASHA were told


def test_train_on_a_diverging_config_exits_1_with_one_line_and_a_failed_run(ray_cluster, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["train", "--config", str(REPO / "search_spaces/configs/quick.yaml"), "--workers", "2",
               "--storage", str(tmp_path / "results"), "--mlflow-uri", uri, "--name", "div", *TINY,
               "--set", "optim.epochs=2", "--set", "optim.lr=1e6"])
    assert rc == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("distmtl:")]
    assert re.fullmatch(r"distmtl: error: diverged at epoch 0, step \d+: loss (nan|inf) \(run 'div', MLflow run "
                        r"\w+ marked FAILED\)", line)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("quick").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["distmtl.failure_reason"] in line
