"""The sweep's MLflow logger in-process, through a driver that dies and one that resumes the sweep: a
trial keeps its one run, epochs are logged once, and no run of the sweep is left RUNNING."""

import pickle

from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from distmtl.cli import main
from distmtl.tune.console import ConsoleProgress, status_table
from distmtl.tune.space import Space
from distmtl.tune.tracking_callback import MlflowTrialLogger

from conftest import REPO

SAMPLED = {"weighting.weights.shape": 0.5, "optim.weight_decay": 1e-4, "model.dropout": 0.1,
           "data.noise_level": 0.05, "model.bottleneck": 32, "weighting.temperature": 2.0}


def trial(trial_id: str, status: str = Trial.RUNNING) -> Trial:
    made = Trial("trial", config=dict(SAMPLED), trial_id=trial_id, stub=True)
    made.set_status(status)
    return made


def epoch(e: int) -> dict:
    return {"epoch": e, "val/loss": 1.0 / (e + 1), "trial_id": "x", "training_iteration": e + 1}


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
    runs = {r.data.tags["distmtl.trial_id"]: r for r in client.search_runs([client.get_experiment_by_name("sweep").experiment_id])}
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
    runs = {r.data.tags["distmtl.trial_id"]: r for r in client.search_runs([client.get_experiment_by_name("sweep").experiment_id])}
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
            logger.on_trial_result(0, [], t, epoch(e))
        logger.on_trial_complete(0, [], t)

    client = MlflowClient(uri)
    runs = {r.data.tags["distmtl.trial_id"]: r for r in client.search_runs([client.get_experiment_by_name("sweep").experiment_id])}
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
    assert lines[3] == "trial dddd_00002 stopped by asha after 2 of 6 epochs; best val/loss_unweighted 1.9 [2 of 3 ended]"
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


def test_a_sweep_has_one_parent_run_with_its_trials_nested_and_the_best_one_named(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = Space(REPO / "search_spaces/quick.yaml")  # val/loss_unweighted, min
    logger = MlflowTrialLogger(uri, "sweep", space, sweep=str(tmp_path / "s"), num_samples=3)
    restored = pickle.loads(pickle.dumps(logger))
    logger.setup()
    good, better, interrupted = trial("eeee_00001"), trial("eeee_00002"), trial("eeee_00003")
    for t, scores in ((good, [3.0, 2.5]), (better, [2.8, 2.0, 1.5])):
        logger.on_trial_start(0, [], t)
        for e, score in enumerate(scores):
            result = {**epoch(e), "val/loss_unweighted": score}
            t.update_last_result(result)
            logger.on_trial_result(0, [], t, result)
        t.set_status(Trial.TERMINATED)
        logger.on_trial_complete(0, [], t)
    logger.on_trial_start(0, [], interrupted)
    logger.on_experiment_end([good, better, interrupted])  # Ctrl-C while the third trial runs

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sweep").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`distmtl.sweep_of` != ''")
    assert parent.info.status == "KILLED"  # the sweep did not end: --resume continues it
    assert parent.data.tags["distmtl.best_trial_id"] == "eeee_00002"
    assert parent.data.tags["best.weighting.weights.shape"] == "0.5"
    assert parent.data.metrics["best/val/loss_unweighted"] == 1.5 and parent.data.metrics["sweep/trials_ended"] == 2
    assert parent.data.params["metric"] == "val/loss_unweighted" and parent.data.params["scheduler.name"] == "asha"
    artifacts = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"quick.yaml", "trials.md", "trials.json", "optimization_history.png", "param_importances.png"} <= artifacts
    trials = [r for r in client.search_runs([experiment]) if "distmtl.trial_id" in r.data.tags]
    assert len(trials) == 3 and {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    description = client.get_experiment(experiment).tags["mlflow.note.content"]  # the UI's experiment description
    assert f"`{REPO / 'search_spaces/quick.yaml'}`" in description and "optuna/tpe with asha" in description

    restored.setup()  # the resumed sweep's driver: the same parent, RUNNING again
    assert restored.parent.run_id == parent.info.run_id
    assert client.get_run(parent.info.run_id).info.status == "RUNNING"
    assert len(client.search_runs([experiment], "tags.`distmtl.sweep_of` != ''")) == 1
