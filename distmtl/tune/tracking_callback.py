"""A Tune callback (on the driver) that gives every trial exactly one MLflow run, nested under one parent
run per sweep.

It runs in the Tune driver, so one process writes the store however many trials run at once
(SQLite copes; for a cluster point it at an ``mlflow server``). The sweep's parent run holds the space
(params, the YAML file), and when the sweep ends the best trial (tags, metrics) and a table of all trials.
A trial that ``distmtl tune --resume`` continues logs into the run it already has (found by its trial
id), skipping epochs the run holds, and the resumed sweep reuses its parent run; when the sweep ends or
is interrupted, no run of the sweep is left RUNNING.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from ray.train import Checkpoint
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from distmtl.engine.export import best_model
from distmtl.errors import FAILURE_KEY, DistmtlError
from distmtl.tracking import FAILURE_TAG, MlflowRun, default_journal
from distmtl.tracking.fallback import FallbackWriter
from distmtl.tracking.model_export import MODEL_DIR, save_model
from distmtl.tracking.plots import save_figure
from distmtl.tune.hypervolume import describe_hypervolume, front_hypervolume, hypervolume_metrics
from distmtl.tune.pareto import pareto_front
from distmtl.tune.space import Space
from distmtl.tune.study_plots import save_study_figures, study_of

log = logging.getLogger("distmtl")

TRIAL_TAG = "distmtl.trial_id"
SWEEP_TAG = "distmtl.sweep"
#: On the run of a trial the scheduler ended before its last epoch: that epoch (0-based) and the scheduler.
STOPPED_AT_TAG, STOPPED_BY_TAG = "distmtl.stopped_at_epoch", "distmtl.stopped_by"
#: On the runs of a Pareto sweep's front.
PARETO_TAG = "distmtl.pareto"
#: On a sweep's parent run: the sweep's storage path (trial runs carry SWEEP_TAG instead).
PARENT_TAG = "distmtl.sweep_of"
_LOST = "its trial was lost: the sweep's driver stopped before it saved the trial (the trial did not finish)"


class MlflowTrialLogger(Callback):
    """Run per trial: params = the resolved config (searched values included), per-epoch metrics, config.yaml;
    FAILED with the reason in the tag ``distmtl.failure_reason`` when its training failed or the trial errored."""

    def __init__(self, tracking_uri: str, experiment: str, space: Space, sweep: str,
                 num_samples: int | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.space = space
        self.sweep = sweep
        self.journal = str(default_journal(experiment, tracking_uri))
        self.runs: dict[str, MlflowRun] = {}
        self.failures: dict[str, str] = {}
        self.checkpoints: dict[str, str] = {}  # each trial's latest checkpoint (Tune's path)
        self.parent: MlflowRun | None = None
        self.total = num_samples or space.file.num_samples  # kept with the sweep: a resumed driver knows it too
        self._writer: FallbackWriter | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles the callback with the sweep (for ``--resume``): settings only, no live runs or client."""
        return {**self.__dict__, "runs": {}, "failures": {}, "checkpoints": {}, "parent": None, "_writer": None}

    @property
    def writer(self) -> FallbackWriter:
        if self._writer is None:
            self._writer = FallbackWriter(self.tracking_uri, self.journal)
        return self._writer

    def setup(self, **info: Any) -> None:
        """At the sweep's start (also a resumed one): its parent run, reopened if an earlier driver made it."""
        existing = self._search(f"tags.`{PARENT_TAG}` = '{self.sweep}'")
        if existing:
            self.parent = MlflowRun.reopen(self.writer, existing[0].info.run_id)
            return
        f = self.space.file
        self.parent = MlflowRun(self.tracking_uri, self.experiment, f"sweep-{self.experiment}",
                                f.model_dump(mode="json"),
                                {PARENT_TAG: self.sweep, "distmtl.space": str(self.space.path),
                                 "distmtl.searcher": f"{f.searcher.name}/{f.searcher.sampler}",
                                 "distmtl.scheduler": self.space.scheduler_name}, writer=self.writer,
                                experiment_description=self._description())
        self.writer.write({"op": "log_artifact", "run": self.parent.run_id, "path": str(self.space.path),
                           "artifact_path": None})

    def _description(self) -> str:
        """The experiment's description in MLflow's UI: which space file its sweeps search, and how."""
        f = self.space.file
        objective = " and ".join(f"{m} ({d})" for m, d in zip(self.space.metrics, self.space.modes))
        return (f"distmtl sweep of the search space `{self.space.path.resolve()}` (base config `{f.base}`): "
                f"{', '.join(f.parameters)} searched by {f.searcher.name}/{f.searcher.sampler} with "
                f"{self.space.scheduler_name}, for {objective}. Each sweep is one parent run "
                f"(`sweep-{self.experiment}`); its trials are nested under it.")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        existing = self._existing_run(trial.trial_id)
        if existing:
            self.runs[trial.trial_id] = MlflowRun.reopen(self.writer, existing)
            log.info("trial %s continues MLflow run %s", trial.trial_id, existing)
            return
        sampled = self._sampled(trial)
        config = self.space.trial_config(sampled).model_dump()
        tags = {TRIAL_TAG: trial.trial_id, SWEEP_TAG: self.sweep, "distmtl.space": str(self.space.path),
                **{f"searched.{k}": str(v) for k, v in sampled.items()}}
        self.runs[trial.trial_id] = MlflowRun(self.tracking_uri, self.experiment, f"trial-{trial.trial_id}", config,
                                              tags, parent_run_id=self.parent.run_id if self.parent else None,
                                              writer=self.writer)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run = self.runs.get(trial.trial_id)
        if run is None:
            return
        if FAILURE_KEY in result:
            self.failures[trial.trial_id] = result[FAILURE_KEY]
            run.set_tags({FAILURE_TAG: result[FAILURE_KEY]})
            return
        if result.get(CHECKPOINT_PATH_KEY):
            self.checkpoints[trial.trial_id] = result[CHECKPOINT_PATH_KEY]
        if run.log_epoch(result) and result.get(CHECKPOINT_PATH_KEY):
            with Checkpoint(result[CHECKPOINT_PATH_KEY]).as_directory() as directory:
                run.log_checkpoint_artifacts(directory)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """FAILED if its training failed; else FINISHED, tagged with the epoch it stopped at when the scheduler
        (ASHA or MO-ASHA) ended it early, so early-stopped trials stand out in the runs table. In a Pareto sweep
        the parent run gets the front's hypervolume so far."""
        run = self.runs.get(trial.trial_id)
        if self.space.pareto and self.parent is not None and trial.trial_id not in self.failures:
            self._log_hypervolume(trials, trial)
        if run is not None and trial.trial_id not in self.failures and self.space.stops_early:
            planned = self.space.trial_config(self._sampled(trial)).optim.epochs
            if 0 <= run.last_epoch < planned - 1:
                run.set_tags({STOPPED_AT_TAG: str(run.last_epoch), STOPPED_BY_TAG: self.space.scheduler_name})
                self._log_best_model(run, trial.trial_id)
        self._finish(trial.trial_id, "FAILED" if trial.trial_id in self.failures else "FINISHED")

    def _log_hypervolume(self, trials: list, ended: Any) -> None:
        """On the parent run, step = trials finished: the hypervolume of their front and its reference point."""
        finished = [t for t in trials if t.status == Trial.TERMINATED or t is ended]
        points = [[float((t.last_result or {}).get(m, math.nan)) for m in self.space.metrics] for t in finished
                  if FAILURE_KEY not in (t.last_result or {})]
        measured = front_hypervolume(points, self.space.modes, self.space.file.reference_point)
        if measured is not None:
            self.parent.log_metrics(hypervolume_metrics(*measured, self.space.metrics), step=len(points))

    def _log_best_model(self, run: MlflowRun, trial_id: str) -> None:
        """A trial the scheduler stopped never reached the last epoch, where training saves its model: export
        its best-epoch model from its last checkpoint instead (``artifacts/model``, as every finished run has)."""
        checkpoint = self.checkpoints.get(trial_id)
        if checkpoint is None:
            return
        with Checkpoint(checkpoint).as_directory() as directory, \
                tempfile.TemporaryDirectory(prefix="distmtl-model-") as scratch:
            try:
                model, image_shape, state = best_model(directory)
            except DistmtlError as exc:
                log.warning("trial %s: no model logged (%s)", trial_id, exc)
                return
            save_model(model, image_shape, state.config, Path(scratch) / MODEL_DIR)
            self.writer.write({"op": "log_artifact", "run": run.run_id, "path": str(Path(scratch) / MODEL_DIR),
                               "artifact_path": "artifacts"})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run = self.runs.get(trial.trial_id)
        if run is not None:
            run.set_tags({FAILURE_TAG: error_line(trial)})
        self._finish(trial.trial_id, "FAILED")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Interrupted trials' runs end KILLED (``--resume`` reopens them); runs a killed driver left RUNNING
        are closed according to what Tune knows of their trial; kept records are written if MLflow answers."""
        for trial_id in list(self.runs):
            self._finish(trial_id, "KILLED")
        status = {t.trial_id: t.status for t in trials}
        for stale in self._running_runs():
            trial_id = stale.data.tags.get(TRIAL_TAG, "")
            run = MlflowRun.attach(self.tracking_uri, stale.info.run_id, self.writer)
            if trial_id not in status:
                run.set_tags({FAILURE_TAG: _LOST})
            run.finish({Trial.TERMINATED: "FINISHED", Trial.ERROR: "FAILED"}.get(status.get(trial_id), "KILLED"))
        if self.parent is not None:
            self._summarize(trials)
            if self.space.pareto:
                self._mark_pareto_front(trials)
        self.writer.close()

    def _mark_pareto_front(self, trials: list) -> None:
        """A Pareto sweep's front: each member's run tagged ``distmtl.pareto = true``; on the parent run the
        members' ids, ``pareto.md`` and the front drawn over every finished trial (``pareto_front.png``)."""
        metrics, modes = self.space.metrics, self.space.modes
        points = {t.trial_id: [float((t.last_result or {}).get(m, math.nan)) for m in metrics] for t in trials
                  if t.status == Trial.TERMINATED and t.trial_id not in self.failures}
        front = pareto_front(points, modes)
        for trial_id in front:
            run_id = self._existing_run(trial_id)
            if run_id:
                MlflowRun.attach(self.tracking_uri, run_id, self.writer).set_tags({PARETO_TAG: "true"})
        self.parent.set_tags({"distmtl.pareto_trials": ",".join(front)})
        lines = [f"| trial | {' | '.join(f'{m} ({d})' for m, d in zip(metrics, modes))} |", "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {t} | {' | '.join(f'{v:.4g}' for v in points[t])} |" for t in front]
        measured = front_hypervolume(list(points.values()), modes, self.space.file.reference_point)
        if measured is not None:
            lines += ["", describe_hypervolume(*measured, metrics, self.space.file.reference_point is not None)]
        self.parent.log_text("\n".join(lines) + "\n", "pareto.md")
        finite = {t: v for t, v in points.items() if all(math.isfinite(x) for x in v)}
        if front:
            with tempfile.TemporaryDirectory(prefix="distmtl-pareto-") as directory:
                path = Path(directory, "pareto_front.png")
                save_figure("pareto_front", {"metrics": metrics, "modes": modes, "points": finite, "front": front}, path)
                self.writer.write({"op": "log_artifact", "run": self.parent.run_id, "path": str(path),
                                   "artifact_path": None})

    def _summarize(self, trials: list) -> None:
        """On the parent run: every trial as a table (``trials.md``, ``trials.json``), the best trial's id and
        hyperparameters (tags ``best.<key>``) and its best score; KILLED if the sweep did not end (resumable)."""
        metric, mode = self.space.tune_metric, self.space.mode
        rows = [self._row(t, metric, mode) for t in trials]
        scored = [r for r in rows if r["failure"] is None and r["best"] is not None]
        best = (min if mode == "min" else max)(scored, key=lambda r: r["best"]) if scored and not self.space.pareto else None
        if best is not None:
            self.parent.set_tags({"distmtl.best_trial_id": best["trial_id"],
                                  **{f"best.{k}": str(v) for k, v in best["searched"].items()}})
            self.parent.log_metrics({f"best/{metric}": best["best"]}, step=0)
        ended = sum(t.status in (Trial.TERMINATED, Trial.ERROR) for t in trials)
        failed = sum(r["failure"] is not None for r in rows)
        self.parent.log_metrics({"sweep/trials_ended": ended, "sweep/trials_failed": failed}, step=0)
        self.parent.log_text(json.dumps(rows, indent=1), "trials.json")
        self.parent.log_text(_trials_markdown(rows, metric, best), "trials.md")
        if not self.space.pareto and scored:
            self._log_study_figures([(r["searched"], r["best"]) for r in scored])
        done = ended == len(trials) and len(trials) >= self.total
        self.parent.finish("FINISHED" if done else "KILLED")

    def _log_study_figures(self, scored: list[tuple[dict[str, Any], float]]) -> None:
        """Optuna's optimisation history and hyperparameter importance of the scored trials, on the parent run."""
        with tempfile.TemporaryDirectory(prefix="distmtl-study-") as directory:
            for path in save_study_figures(study_of(self.space, scored), Path(directory)):
                self.writer.write({"op": "log_artifact", "run": self.parent.run_id, "path": str(path),
                                   "artifact_path": None})

    def _row(self, trial: Any, metric: str, mode: str) -> dict[str, Any]:
        result = trial.last_result or {}
        failure = self.failures.get(trial.trial_id) or result.get(FAILURE_KEY)
        if failure is None and trial.status == Trial.ERROR:
            failure = error_line(trial)
        best = (trial.metric_analysis.get(metric) or {}).get(mode)
        return {"trial_id": trial.trial_id, "status": trial.status, "epochs": int(result.get("epoch", -1)) + 1,
                "best": best if isinstance(best, (int, float)) and math.isfinite(best) else None,
                "failure": failure, "searched": self._sampled(trial)}

    def _sampled(self, trial: Any) -> dict[str, Any]:
        return {k: v for k, v in trial.config.items() if k in self.space.file.parameters}

    def _finish(self, trial_id: str, status: str) -> None:
        run = self.runs.pop(trial_id, None)
        if run is not None:
            run.finish(status)

    def _existing_run(self, trial_id: str) -> str | None:
        """The id of the run an earlier driver of this sweep made for ``trial_id``, if any."""
        runs = self._search(f"tags.`{TRIAL_TAG}` = '{trial_id}'")
        return runs[0].info.run_id if runs else None

    def _running_runs(self) -> list:
        return self._search(f"tags.`{SWEEP_TAG}` = '{self.sweep}' and attributes.status = 'RUNNING'")

    def _search(self, query: str) -> list:
        """Runs of the sweep's experiment matching ``query`` (none while MLflow is away: it was reported)."""
        try:
            found = self.writer.client.get_experiment_by_name(self.experiment)
            return self.writer.client.search_runs([found.experiment_id], query) if found else []
        except Exception:
            return []


def error_line(trial: Any) -> str:
    """The last line of an errored trial's error (Tune keeps the whole traceback in the trial's folder)."""
    error = trial.get_error()
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] if error else []
    return lines[-1][:500] if lines else "the trial raised an error (see error.txt in its folder)"


def _trials_markdown(rows: list[dict[str, Any]], metric: str, best: dict[str, Any] | None) -> str:
    """The sweep's trials as a Markdown table, best first line marked."""
    keys = sorted({k for r in rows for k in r["searched"]})
    lines = [f"| trial | status | epochs | best {metric} | {' | '.join(keys)} | failure |",
             "|" + "---|" * (len(keys) + 5)]
    for r in rows:
        mark = " (best)" if best is not None and r["trial_id"] == best["trial_id"] else ""
        score = f"{r['best']:.4g}" if r["best"] is not None else ""
        values = " | ".join(short_value(r["searched"].get(k, "")) for k in keys)
        lines.append(f"| {r['trial_id']}{mark} | {r['status']} | {r['epochs']} | {score} | {values} | {r['failure'] or ''} |")
    return "\n".join(lines) + "\n"


def short_value(value: Any) -> str:
    """A sampled value as a table cell or console word: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)

