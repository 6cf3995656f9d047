"""The sweep's parent MLflow run: it holds the search space (params, the YAML file), its trials' runs are nested
under it, and when the sweep ends it holds the sweep's outcome — the best trial (tags, metric) or the Pareto
front, a table of every trial, Optuna's views of the search — and ends FINISHED, or KILLED when the sweep was
interrupted (a resumed sweep reopens it)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from tabulate import tabulate

from distmtl.tracking import MlflowRun, default_journal
from distmtl.tracking.fallback import FallbackWriter
from distmtl.tracking.mlflow_run import find_runs
from distmtl.tracking.plots import save_figure
from distmtl.tracking.ui import SWEEP_PARENT_TAG
from distmtl.tune.hypervolume import describe_hypervolume
from distmtl.tune.outcome import SweepOutcome, TrialOutcome, short_value
from distmtl.tune.space import Space
from distmtl.tune.study_plots import save_study_figures, study_of
from distmtl.tune.tracking_callback import TRIAL_TAG

#: On the runs of a Pareto sweep's front.
PARETO_TAG = "distmtl.pareto"


def open_sweep_run(tracking_uri: str, experiment: str, space: Space, sweep: str) -> MlflowRun:
    """The sweep's parent run: reopened (RUNNING again) when an earlier driver of this sweep made it, else created."""
    journal = default_journal(experiment, tracking_uri)
    client = FallbackWriter(tracking_uri, journal).client  # with MLflow's retries bounded
    existing = find_runs(client, experiment, f"tags.`{SWEEP_PARENT_TAG}` = '{sweep}'")
    if existing:
        return MlflowRun.reopen(tracking_uri, existing[0].info.run_id, journal=journal)
    f = space.file
    run = MlflowRun(tracking_uri, experiment, f"sweep-{experiment}", f.model_dump(mode="json"),
                    {SWEEP_PARENT_TAG: sweep, "distmtl.space": str(space.path),
                     "distmtl.searcher": f"{f.searcher.name}/{f.searcher.sampler}",
                     "distmtl.scheduler": space.scheduler_name},
                    command="tune", journal=journal, experiment_description=_description(space, experiment))
    run.log_artifact(space.path)
    return run


def log_outcome(run: MlflowRun, experiment: str, space: Space, outcome: SweepOutcome) -> None:
    """On the parent run: every trial as a table (``trials.md``, ``trials.json``), the best trial's id and
    hyperparameters (tags ``best.<key>``) and its best score, or the Pareto front; then end it."""
    metric = space.tune_metric
    best = outcome.best
    if best is not None:
        run.set_tags({"distmtl.best_trial_id": best.trial_id,
                      **{f"best.{k}": str(v) for k, v in best.searched.items()}})
        run.log_metrics({f"best/{metric}": best.score}, step=0)
    run.log_metrics({"sweep/trials_ended": outcome.ended, "sweep/trials_failed": len(outcome.failed)}, step=0)
    rows = [{"trial_id": t.trial_id, "status": t.status, "epochs": t.epochs, "best": t.score, "failure": t.failure,
             "searched": t.searched} for t in outcome.trials]
    run.log_text(json.dumps(rows, indent=1), "trials.json")
    run.log_text(_trials_markdown(outcome.trials, metric, best), "trials.md")
    if outcome.scored:
        with tempfile.TemporaryDirectory(prefix="distmtl-study-") as directory:
            for path in save_study_figures(study_of(space, [(t.searched, t.score) for t in outcome.scored]),
                                           Path(directory)):
                run.log_artifact(path)
    if space.pareto:
        _log_front(run, experiment, space, outcome)
    run.finish("KILLED" if outcome.interrupted else "FINISHED")


def _log_front(run: MlflowRun, experiment: str, space: Space, outcome: SweepOutcome) -> None:
    """A Pareto sweep's front: each member's run tagged ``distmtl.pareto = true``; on the parent run the members'
    ids, ``pareto.md`` and the front drawn over every finished trial (``pareto_front.png``)."""
    metrics, modes = space.metrics, space.modes
    front = [t.trial_id for t in outcome.front]
    for trial_id in front:
        for found in find_runs(run.client, experiment, f"tags.`{TRIAL_TAG}` = '{trial_id}'")[:1]:
            MlflowRun.attach(run.writer.tracking_uri, found.info.run_id, run.writer).set_tags({PARETO_TAG: "true"})
    run.set_tags({"distmtl.pareto_trials": ",".join(front)})
    header = ["trial", *(f"{m} ({d})" for m, d in zip(metrics, modes))]
    table = [[t.trial_id, *(f"{v:.4g}" for v in t.values(metrics))] for t in outcome.front]
    volume = ""  # its history, trial by trial, is the parent run's metric pareto/hypervolume (the trial logger's)
    if outcome.hypervolume is not None:
        volume = ("\n" + describe_hypervolume(*outcome.hypervolume, metrics, space.file.reference_point is not None)
                  + "\n")
    run.log_text(tabulate(table, header, tablefmt="github", disable_numparse=True) + "\n" + volume, "pareto.md")
    finite = {t.trial_id: t.values(metrics) for t in outcome.trials
              if t.finished and all(math.isfinite(v) for v in t.values(metrics))}
    if front:
        with tempfile.TemporaryDirectory(prefix="distmtl-pareto-") as directory:
            path = Path(directory, "pareto_front.png")
            save_figure("pareto_front", {"metrics": metrics, "modes": modes, "points": finite, "front": front}, path)
            run.log_artifact(path)


def _trials_markdown(trials: list[TrialOutcome], metric: str, best: TrialOutcome | None) -> str:
    """The sweep's trials as a Markdown table, the best one marked."""
    keys = sorted({k for t in trials for k in t.searched})
    rows = [[t.trial_id + (" (best)" if best is not None and t.trial_id == best.trial_id else ""), t.status,
             str(t.epochs), f"{t.score:.4g}" if t.score is not None else "",
             *(short_value(t.searched.get(k, "")) for k in keys), t.failure or ""] for t in trials]
    return tabulate(rows, ["trial", "status", "epochs", f"best {metric}", *keys, "failure"], tablefmt="github",
                    disable_numparse=True) + "\n"


def _description(space: Space, experiment: str) -> str:
    """The experiment's description in MLflow's UI: which space file its sweeps search, and how."""
    f = space.file
    objective = " and ".join(f"{m} ({d})" for m, d in zip(space.metrics, space.modes))
    return (f"distmtl sweep of the search space `{space.path.resolve()}` (base config `{f.base}`): "
            f"{', '.join(f.parameters)} searched by {f.searcher.name}/{f.searcher.sampler} with "
            f"{space.scheduler_name}, for {objective}. Each sweep is one parent run "
            f"(`sweep-{experiment}`); its trials are nested under it.")
