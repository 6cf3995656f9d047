"""The sweep's MLflow logger in-process, through a driver that dies and one that resumes the sweep: a
trial keeps its one run, epochs are logged once, and no run of the sweep is left RUNNING. The driver learns
a trial's planned epochs and settings from its reports and never rebuilds its config; the sweep's outcome is
computed once and goes to the console and to the parent run alike."""

import json
import pickle
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from distmtl.cli import _ranking_table, main
from distmtl.tune.console import ConsoleProgress, status_table
from distmtl.tune.outcome import sweep_outcome
from distmtl.tune.reporting import EPOCHS_PLANNED, SETTINGS
from distmtl.tune.space import Space
from distmtl.tune.sweep_run import log_outcome, open_sweep_run
from distmtl.tune.tracking_callback import MlflowTrialLogger

from conftest import REPO

SAMPLED = {"weighting.weights.shape": 0.5, "optim.weight_decay": 1e-4, "model.dropout": 0.1,
           "data.noise_level": 0.05, "model.bottleneck": 32, "weighting.temperature": 2.0}


def trial(trial_id: str, status: str = Trial.RUNNING) -> Trial:
    made = Trial("trial", config=dict(SAMPLED), trial_id=trial_id, stub=True)
    made.set_status(status)
    return made


def epoch(e: int) -> dict:
    return {"epoch": e, "val/loss": 1.0 / (e + 1), "trial_id": "x", "training_iteration": e + 1, EPOCHS_PLANNED: 6}


@pytest.fixture(autouse=True)
def driver_never_rebuilds_a_trial_config(monkeypatch):
    """Whatever the driver's callbacks show, tag or log of a trial comes from its reports."""
    def rebuilt(*args, **kwargs):
        raise AssertionError("the driver rebuilt a trial's config")

    monkeypatch.setattr(Space, "trial_config", rebuilt)


def report(t: Trial, result: dict, *callbacks) -> None:
    """A result as Tune hands it out: the callbacks see it, then the trial keeps it."""
    for callback in callbacks:
        callback.on_trial_result(0, [], t, result)
    t.update_last_result(result)


def test_a_trial_resumed_by_a_new_driver_continues_its_run_and_stale_runs_are_closed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = Space(REPO / "search_spaces/quick.yaml")
    first = MlflowTrialLogger(uri, "sweep", space, sweep=str(tmp_path / "sweep"))
    restored = pickle.loads(pickle.dumps(first))  # as Tune keeps it in tuner.pkl for Tuner.restore
    resumed, lost = trial("aaaa_00001"), trial("aaaa_00002")
    for t in (resumed, lost):
        first.on_trial_start(0, [], t)
    for e in (0, 1):
        first.on_trial_result(0, [], resumed, epoch(e))
    # the first driver is killed here: both runs are RUNNING; Tune's saved state knows only the first trial

    restored.on_trial_start(0, [], resumed)
    for e in (1, 2):  # the resumed Train run reports its checkpoint's epoch again, then goes on
        restored.on_trial_result(0, [], resumed, epoch(e))
    restored.on_trial_complete(0, [], resumed)
    restored.on_experiment_end([resumed])

    client = MlflowClient(uri)
    runs = {r.data.tags["distmtl.trial_id"]: r
            for r in client.search_runs([client.get_experiment_by_name("sweep").experiment_id])}
    assert set(runs) == {"aaaa_00001", "aaaa_00002"}
    assert runs["aaaa_00001"].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs["aaaa_00001"].info.run_id, "val/loss")] == [0, 1, 2]
    assert runs["aaaa_00002"].info.status == "KILLED"
    assert "lost" in runs["aaaa_00002"].data.tags["distmtl.failure_reason"]


def test_interrupted_trials_end_killed_and_a_diverged_one_failed_with_its_reason(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MlflowTrialLogger(uri, "sweep", Space(REPO / "search_spaces/quick.yaml"), sweep=str(tmp_path / "s"))
    running, diverged = trial("bbbb_00001"), trial("bbbb_00002")
    for t in (running, diverged):
        logger.on_trial_start(0, [], t)
    logger.on_trial_result(0, [], running, epoch(0))
    logger.on_trial_result(0, [], diverged, {"epoch": 0, "failure": "diverged at epoch 0, step 3: loss nan",
                                            "val/loss": float("inf"), "training_iteration": 1})
    diverged.set_status(Trial.TERMINATED)
    logger.on_trial_complete(0, [], diverged)
    logger.on_experiment_end([running, diverged])  # Ctrl-C: Tune stops with a trial still running

    client = MlflowClient(uri)
    runs = {r.data.tags["distmtl.trial_id"]: r
            for r in client.search_runs([client.get_experiment_by_name("sweep").experiment_id])}
    assert runs["bbbb_00001"].info.status == "KILLED"
    assert runs["bbbb_00002"].info.status == "FAILED"
    assert runs["bbbb_00002"].data.tags["distmtl.failure_reason"] == "diverged at epoch 0, step 3: loss nan"
    assert "val/loss" not in runs["bbbb_00002"].data.metrics  # the worst-case score is for the searcher only


def test_resume_without_a_sweep_to_resume_is_refused_before_anything_starts(tmp_path, capsys):
    rc = main(["tune", "--space", str(REPO / "search_spaces/quick.yaml"), "--storage", str(tmp_path), "--resume"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (f"distmtl: error: --resume: no sweep to resume at {tmp_path}/quick "
                                               "(check --storage and --experiment)")


def test_a_trial_the_scheduler_stopped_early_is_tagged_with_its_last_epoch(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = Space(REPO / "search_spaces/quick.yaml")
    logger = MlflowTrialLogger(uri, "sweep", space, sweep=str(tmp_path / "s"))
    full, stopped = trial("cccc_00001"), trial("cccc_00002")
    for t, epochs in ((full, space.base_config.optim.epochs), (stopped, 2)):
        logger.on_trial_start(0, [], t)
        for e in range(epochs):
            report(t, epoch(e), logger)
        logger.on_trial_complete(0, [], t)

    client = MlflowClient(uri)
    runs = {r.data.tags["distmtl.trial_id"]: r
            for r in client.search_runs([client.get_experiment_by_name("sweep").experiment_id])}
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    assert "distmtl.stopped_at_epoch" not in runs["cccc_00001"].data.tags
    assert runs["cccc_00002"].data.tags["distmtl.stopped_at_epoch"] == "1"
    assert runs["cccc_00002"].data.tags["distmtl.stopped_by"] == "asha"



def test_the_console_says_one_line_per_trial_start_and_end(capsys):
    space = Space(REPO / "search_spaces/quick.yaml")
    console = ConsoleProgress(space, num_samples=3)
    full, stopped, diverged = trial("dddd_00001"), trial("dddd_00002"), trial("dddd_00003")
    for t, epochs in ((full, space.base_config.optim.epochs), (stopped, 2)):
        console.on_trial_start(0, [], t)
        for e in range(epochs):
            t.update_last_result({**epoch(e), "val/loss_unweighted": 2.0 - e / 10})
        console.on_trial_complete(0, [], t)
    diverged.update_last_result({"epoch": 0, "failure": "diverged at epoch 0, step 3: loss nan",
                                 "val/loss_unweighted": float("inf"), "training_iteration": 1})
    console.on_trial_complete(0, [], diverged)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("trial dddd_00001 started: weighting.weights.shape=0.5, optim.weight_decay=0.0001")
    assert lines[1] == "trial dddd_00001 finished (6 epochs); best val/loss_unweighted 1.5 [1 of 3 ended]"
    assert lines[3] == ("trial dddd_00002 stopped by asha after 2 of 6 epochs; "
                        "best val/loss_unweighted 1.9 [2 of 3 ended]")
    assert lines[4] == "trial dddd_00003 failed: diverged at epoch 0, step 3: loss nan [3 of 3 ended]"


def test_the_verbose_status_table_shows_the_searched_values_and_the_metric_at_most_once_a_minute(monkeypatch, capfd):
    # where the trials' folders are needs a Ray session; the table itself does not
    monkeypatch.setattr(Trial, "local_experiment_path", property(lambda self: "/sweep"))
    monkeypatch.setattr(Trial, "local_path", property(lambda self: None))
    trials = []
    for i, score in enumerate([2.0, 1.5, None]):
        t = Trial("trial", config={**SAMPLED, "data.num_samples": 300}, trial_id=f"ffff_0000{i}", stub=True)
        t.set_status(Trial.TERMINATED if score else Trial.RUNNING)
        if score:
            t.update_last_result({**epoch(1), "val/loss_unweighted": score, "train/loss": 3.0, "config": t.config})
        trials.append(t)
    from ray.tune.utils.log import Verbosity, set_verbosity

    set_verbosity(Verbosity.V3_TRIAL_DETAILS)  # Tune's default; an earlier in-process sweep may have left it lower
    space = Space(REPO / "search_spaces/quick.yaml")
    reporter = status_table(space)
    reporter.setup(start_time=0.0, total_samples=3, metric=space.tune_metric, mode=space.mode)  # as Tune does
    assert reporter.should_report(trials) and not reporter.should_report(trials)  # then not again within 60 s
    reporter.report(trials, done=False)
    out = capfd.readouterr().out  # Ray's safe_print may write around an earlier-captured stream: read the fd
    lines = [line[line.index("|"):] for line in out.splitlines() if "|" in line]
    header = next((line for line in lines if line.startswith("| Trial name")), None)
    assert header is not None, out
    assert [c.strip() for c in header.strip("|").split("|")] == ["Trial name", "status", "loc", *SAMPLED,
                                                                  "val/loss_unweighted"]
    rows = [line for line in lines if line.startswith("| trial_")]
    assert [r.split("|")[1].strip() for r in rows] == ["trial_ffff_00002", "trial_ffff_00001", "trial_ffff_00000"]


def test_a_trial_run_takes_its_params_from_the_trials_first_report(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = Space(REPO / "search_spaces/quick.yaml")
    logger = MlflowTrialLogger(uri, "sweep", space, sweep=str(tmp_path / "s"))
    settings = space.base_config.model_copy(update={"optim": space.base_config.optim.model_copy(update={"lr": 0.02})})
    t = trial("gggg_00001")
    logger.on_trial_start(0, [], t)
    report(t, {**epoch(0), SETTINGS: json.dumps(settings.model_dump(mode="json"))}, logger)
    report(t, epoch(1), logger)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert run.data.params["optim.lr"] == "0.02"
    assert run.data.params["model.bottleneck"] == str(settings.model.bottleneck)
    assert run.data.tags["searched.model.dropout"] == "0.1" and run.data.tags["mlflow.source.name"] == "distmtl tune"
    assert run.inputs.dataset_inputs[0].dataset.name == "synthetic"
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert SETTINGS not in run.data.params and EPOCHS_PLANNED not in run.data.metrics


def test_the_sweeps_outcome_is_computed_once_and_the_console_and_mlflow_show_the_same(tmp_path):
    space = Space(REPO / "search_spaces/quick.yaml")  # val/loss_unweighted, min
    trials = {name: trial(f"hhhh_0000{i}") for i, name in enumerate(["good", "better", "diverged", "errored", "cut"])}
    for name, scores in (("good", [3.0, 2.5]), ("better", [2.8, 2.0, 2.2]), ("errored", [1.0])):
        for e, score in enumerate(scores):
            trials[name].update_last_result({**epoch(e), "val/loss_unweighted": score})
    trials["diverged"].update_last_result({**epoch(0), "val/loss_unweighted": float("inf"),
                                           "failure": "diverged at epoch 0, step 3: loss nan"})
    for name in ("good", "better", "diverged"):
        trials[name].set_status(Trial.TERMINATED)
    trials["errored"].set_status(Trial.ERROR)
    outcome = sweep_outcome(list(trials.values()), space, total=5)

    assert [t.trial_id for t in outcome.ranking] == ["hhhh_00001", "hhhh_00000"]  # best epoch 2.0, then 2.5
    assert outcome.best.trial_id == "hhhh_00001" and outcome.best.score == 2.0 and outcome.best.epochs == 3
    assert outcome.failed == {"hhhh_00002": "diverged at epoch 0, step 3: loss nan",
                              "hhhh_00003": "the trial raised an error (see error.txt in its folder)"}
    assert outcome.ended == 4 and outcome.interrupted and outcome.front == []
    console = _ranking_table(outcome.ranking, "best val/loss_unweighted (min)").splitlines()
    assert [line.split()[1] for line in console[2:]] == ["hhhh_00001", "hhhh_00000"]

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with open_sweep_run(uri, "sweep", space, str(tmp_path / "s")) as parent:
        log_outcome(parent, "sweep", space, outcome)
    client = MlflowClient(uri)
    logged = client.get_run(parent.run_id)
    assert logged.info.status == "KILLED" and logged.data.tags["distmtl.best_trial_id"] == "hhhh_00001"
    assert logged.data.metrics["sweep/trials_failed"] == 2
    rows = json.loads(Path(client.download_artifacts(parent.run_id, "trials.json", str(tmp_path))).read_text())
    assert [(r["trial_id"], r["status"], r["best"], r["failure"]) for r in rows] == [
        (t.trial_id, t.status, t.score, t.failure) for t in outcome.trials]
    table = Path(client.download_artifacts(parent.run_id, "trials.md", str(tmp_path))).read_text().splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    assert cells[0][:4] == ["trial", "status", "epochs", "best val/loss_unweighted"] and cells[0][-1] == "failure"
    assert [c[:4] for c in cells[2:4]] == [["hhhh_00000", "TERMINATED", "2", "2.5"],
                                           ["hhhh_00001 (best)", "TERMINATED", "3", "2"]]
    assert cells[4][-1] == "diverged at epoch 0, step 3: loss nan"


def test_a_pareto_sweeps_front_is_the_finished_trials_no_other_beats(tmp_path):
    space = Space(REPO / "search_spaces/pareto.yaml")  # val/fine/accuracy and val/shape/r2, both max
    points = {"iiii_00001": (0.6, 0.3), "iiii_00002": (0.5, 0.2), "iiii_00003": (0.4, 0.5), "iiii_00004": (0.9, 0.9)}
    trials = []
    for trial_id, (accuracy, r2) in points.items():
        t = trial(trial_id, Trial.TERMINATED if trial_id != "iiii_00004" else Trial.RUNNING)  # the last did not end
        t.update_last_result({**epoch(1), "val/fine/accuracy": accuracy, "val/shape/r2": r2})
        trials.append(t)
    outcome = sweep_outcome(trials, space, total=4)
    assert [t.trial_id for t in outcome.front] == ["iiii_00001", "iiii_00003"] and outcome.best is None
    assert outcome.ranking == [] and outcome.interrupted


def test_a_sweep_has_one_parent_run_with_its_trials_nested_and_the_best_one_named(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = Space(REPO / "search_spaces/quick.yaml")  # val/loss_unweighted, min
    parent = open_sweep_run(uri, "sweep", space, str(tmp_path / "s"))
    logger = MlflowTrialLogger(uri, "sweep", space, sweep=str(tmp_path / "s"), parent_run_id=parent.run_id)
    good, better, interrupted = trial("eeee_00001"), trial("eeee_00002"), trial("eeee_00003")
    for t, scores in ((good, [3.0, 2.5]), (better, [2.8, 2.0, 1.5])):
        logger.on_trial_start(0, [], t)
        for e, score in enumerate(scores):
            report(t, {**epoch(e), "val/loss_unweighted": score}, logger)
        t.set_status(Trial.TERMINATED)
        logger.on_trial_complete(0, [], t)
    logger.on_trial_start(0, [], interrupted)
    logger.on_experiment_end([good, better, interrupted])  # Ctrl-C while the third trial runs
    log_outcome(parent, "sweep", space, sweep_outcome([good, better, interrupted], space, total=3))

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sweep").experiment_id
    (found,) = client.search_runs([experiment], "tags.`distmtl.sweep_of` != ''")
    assert found.info.run_id == parent.run_id
    assert found.info.status == "KILLED"  # the sweep did not end: --resume continues it
    assert found.data.tags["distmtl.best_trial_id"] == "eeee_00002"
    assert found.data.tags["best.weighting.weights.shape"] == "0.5"
    assert found.data.metrics["best/val/loss_unweighted"] == 1.5 and found.data.metrics["sweep/trials_ended"] == 2
    assert found.data.params["metric"] == "val/loss_unweighted" and found.data.params["scheduler.name"] == "asha"
    artifacts = {f.path for f in client.list_artifacts(parent.run_id)}
    assert {"quick.yaml", "trials.md", "trials.json", "optimization_history.png", "param_importances.png"} <= artifacts
    trials = [r for r in client.search_runs([experiment]) if "distmtl.trial_id" in r.data.tags]
    assert len(trials) == 3 and {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.run_id}
    description = client.get_experiment(experiment).tags["mlflow.note.content"]  # the UI's experiment description
    assert f"`{REPO / 'search_spaces/quick.yaml'}`" in description and "optuna/tpe with asha" in description

    resumed = open_sweep_run(uri, "sweep", space, str(tmp_path / "s"))  # the resumed sweep's driver
    assert resumed.run_id == parent.run_id and client.get_run(parent.run_id).info.status == "RUNNING"
    assert len(client.search_runs([experiment], "tags.`distmtl.sweep_of` != ''")) == 1
