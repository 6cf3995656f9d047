"""A Tune callback (on the driver) that gives every trial exactly one MLflow run, nested under the sweep's
parent run (:mod:`distmtl.tune.sweep_run`).

It runs in the Tune driver, so one process writes the store however many trials run at once
(SQLite copes; for a cluster point it at an ``mlflow server``). A trial's run gets its params from the
trial's first report, its metrics and records every epoch, and its best model when it ends. A trial
that ``distmtl tune --resume`` continues logs into the run it already has (found by its trial id),
skipping epochs the run holds; when the sweep ends or is interrupted, no trial run is left RUNNING.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from ray.train import Checkpoint
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from distmtl.engine.export import log_best_model
from distmtl.errors import FAILURE_KEY
from distmtl.tracking import FAILURE_TAG, MlflowRun, default_journal
from distmtl.tracking.fallback import FallbackWriter
from distmtl.tracking.mlflow_run import find_runs
from distmtl.tune.hypervolume import front_hypervolume, hypervolume_metrics
from distmtl.tune.outcome import error_line
from distmtl.tune.reporting import EPOCHS_PLANNED, SETTINGS
from distmtl.tune.space import Space

log = logging.getLogger("distmtl")

TRIAL_TAG = "distmtl.trial_id"
SWEEP_TAG = "distmtl.sweep"
#: On the run of a trial the scheduler ended before its last epoch: that epoch (0-based) and the scheduler.
STOPPED_AT_TAG, STOPPED_BY_TAG = "distmtl.stopped_at_epoch", "distmtl.stopped_by"
_LOST = "its trial was lost: the sweep's driver stopped before it saved the trial (the trial did not finish)"


class MlflowTrialLogger(Callback):
    """Run per trial: params = the resolved config (searched values included), per-epoch metrics, config.yaml,
    the best model; FAILED with the reason in the tag ``distmtl.failure_reason`` when its training failed or the
    trial errored."""

    def __init__(self, tracking_uri: str, experiment: str, space: Space, sweep: str,
                 parent_run_id: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.space = space
        self.sweep = sweep
        self.parent_run_id = parent_run_id
        self.journal = str(default_journal(experiment, tracking_uri))
        self.runs: dict[str, MlflowRun] = {}
        self.failures: set[str] = set()
        self.checkpoints: dict[str, str] = {}  # each trial's latest checkpoint (Tune's path)
        self._writer: FallbackWriter | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles the callback with the sweep (for ``--resume``): settings only, no live runs or client."""
        return {**self.__dict__, "runs": {}, "failures": set(), "checkpoints": {}, "_writer": None}

    @property
    def writer(self) -> FallbackWriter:
        if self._writer is None:
            self._writer = FallbackWriter(self.tracking_uri, self.journal)
        return self._writer

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        existing = self._existing_run(trial.trial_id)
        if existing:
            self.runs[trial.trial_id] = MlflowRun.reopen(self.tracking_uri, existing, self.writer)
            log.info("trial %s continues MLflow run %s", trial.trial_id, existing)
            return
        searched = {k: v for k, v in trial.config.items() if k in self.space.file.parameters}
        tags = {TRIAL_TAG: trial.trial_id, SWEEP_TAG: self.sweep, "distmtl.space": str(self.space.path),
                **{f"searched.{k}": str(v) for k, v in searched.items()}}
        self.runs[trial.trial_id] = MlflowRun(self.tracking_uri, self.experiment, f"trial-{trial.trial_id}", tags=tags,
                                              command="tune", parent_run_id=self.parent_run_id, writer=self.writer)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run = self.runs.get(trial.trial_id)
        if run is None:
            return
        if SETTINGS in result:  # the trial's resolved config, with its Train run's first report
            run.log_config(json.loads(result[SETTINGS]))
        if FAILURE_KEY in result:
            self.failures.add(trial.trial_id)
            run.set_tags({FAILURE_TAG: result[FAILURE_KEY]})
            return
        if result.get(CHECKPOINT_PATH_KEY):
            self.checkpoints[trial.trial_id] = result[CHECKPOINT_PATH_KEY]
        if run.log_epoch(result) and result.get(CHECKPOINT_PATH_KEY):
            with Checkpoint(result[CHECKPOINT_PATH_KEY]).as_directory() as directory:
                run.log_checkpoint_artifacts(directory)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """FAILED if its training failed; else its best model is logged and it ends FINISHED, tagged with the epoch
        it stopped at when the scheduler (ASHA or MO-ASHA) ended it early, so early-stopped trials stand out in the
        runs table. In a Pareto sweep the parent run gets the front's hypervolume so far."""
        if self.space.pareto and self.parent_run_id and trial.trial_id not in self.failures:
            self._log_hypervolume(trials, trial)
        run = self.runs.pop(trial.trial_id, None)
        if run is None:
            return
        if trial.trial_id in self.failures:
            run.finish("FAILED")
            return
        planned = (trial.last_result or {}).get(EPOCHS_PLANNED, 0)
        if self.space.stops_early and 0 <= run.last_epoch < planned - 1:
            run.set_tags({STOPPED_AT_TAG: str(run.last_epoch), STOPPED_BY_TAG: self.space.scheduler_name})
        if trial.trial_id in self.checkpoints:  # a cross-validated trial reports no checkpoint, and has no model
            with Checkpoint(self.checkpoints[trial.trial_id]).as_directory() as directory:
                log_best_model(run, directory)
        run.finish("FINISHED")

    def _log_hypervolume(self, trials: list, ended: Any) -> None:
        """On the parent run, at step = trials finished: the hypervolume of their front and its reference point."""
        finished = [t for t in trials if (t.status == Trial.TERMINATED or t is ended)
                    and FAILURE_KEY not in (t.last_result or {})]
        points = [[float((t.last_result or {}).get(m, math.nan)) for m in self.space.metrics] for t in finished]
        measured = front_hypervolume(points, self.space.modes, self.space.file.reference_point)
        if measured is not None:
            parent = MlflowRun.attach(self.tracking_uri, self.parent_run_id, self.writer)
            parent.log_metrics(hypervolume_metrics(*measured, self.space.metrics), step=len(points))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run = self.runs.pop(trial.trial_id, None)
        if run is not None:
            run.fail(error_line(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Interrupted trials' runs end KILLED (``--resume`` reopens them); runs a killed driver left RUNNING
        are closed according to what Tune knows of their trial; kept records are written if MLflow answers."""
        for run in self.runs.values():
            run.finish("KILLED")
        self.runs.clear()
        status = {t.trial_id: t.status for t in trials}
        for stale in find_runs(self.writer.client, self.experiment,
                               f"tags.`{SWEEP_TAG}` = '{self.sweep}' and attributes.status = 'RUNNING'"):
            trial_id = stale.data.tags.get(TRIAL_TAG, "")
            run = MlflowRun.attach(self.tracking_uri, stale.info.run_id, self.writer)
            if trial_id not in status:
                run.set_tags({FAILURE_TAG: _LOST})
            run.finish({Trial.TERMINATED: "FINISHED", Trial.ERROR: "FAILED"}.get(status.get(trial_id), "KILLED"))
        self.writer.close()

    def _existing_run(self, trial_id: str) -> str | None:
        """The id of the run an earlier driver of this sweep made for ``trial_id``, if any."""
        runs = find_runs(self.writer.client, self.experiment, f"tags.`{TRIAL_TAG}` = '{trial_id}'")
        return runs[0].info.run_id if runs else None
