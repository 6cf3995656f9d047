"""A Tune callback (on the driver) that gives every trial exactly one MLflow run.

It runs in the Tune driver, so one process writes the store however many trials run at once
(SQLite copes; for a cluster point it at an ``mlflow server``). A trial that ``distmtl tune --resume``
continues logs into the run it already has (found by its trial id), skipping epochs the run holds;
when the sweep ends or is interrupted, no run of the sweep is left RUNNING.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.train import Checkpoint
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from distmtl.launch.ray_train import FAILURE_KEY
from distmtl.tracking import FAILURE_TAG, MlflowRun, default_journal
from distmtl.tracking.fallback import FallbackWriter
from distmtl.tune.space import Space

log = logging.getLogger("distmtl")

TRIAL_TAG = "distmtl.trial_id"
SWEEP_TAG = "distmtl.sweep"
#: On the run of a trial the scheduler ended before its last epoch: that epoch (0-based) and the scheduler.
STOPPED_AT_TAG, STOPPED_BY_TAG = "distmtl.stopped_at_epoch", "distmtl.stopped_by"
_LOST = "its trial was lost: the sweep's driver stopped before it saved the trial (the trial did not finish)"


class MlflowTrialLogger(Callback):
    """Run per trial: params = the resolved config (searched values included), per-epoch metrics, config.yaml;
    FAILED with the reason in the tag ``distmtl.failure_reason`` when its training failed or the trial errored."""

    def __init__(self, tracking_uri: str, experiment: str, space: Space, sweep: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.space = space
        self.sweep = sweep
        self.journal = str(default_journal(experiment, tracking_uri))
        self.runs: dict[str, MlflowRun] = {}
        self.failures: dict[str, str] = {}
        self._writer: FallbackWriter | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles the callback with the sweep (for ``--resume``): settings only, no live runs or client."""
        return {**self.__dict__, "runs": {}, "failures": {}, "_writer": None}

    @property
    def writer(self) -> FallbackWriter:
        if self._writer is None:
            self._writer = FallbackWriter(self.tracking_uri, self.journal)
        return self._writer

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
                                              tags, writer=self.writer)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run = self.runs.get(trial.trial_id)
        if run is None:
            return
        if FAILURE_KEY in result:
            self.failures[trial.trial_id] = result[FAILURE_KEY]
            run.set_tags({FAILURE_TAG: result[FAILURE_KEY]})
            return
        if run.log_epoch(result) and result.get(CHECKPOINT_PATH_KEY):
            with Checkpoint(result[CHECKPOINT_PATH_KEY]).as_directory() as directory:
                run.log_checkpoint_artifacts(directory)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """FAILED if its training failed; else FINISHED, tagged with the epoch it stopped at when the scheduler
        (ASHA) ended it early, so early-stopped trials stand out in the runs table."""
        run = self.runs.get(trial.trial_id)
        if run is not None and trial.trial_id not in self.failures and self.space.scheduler_name == "asha":
            planned = self.space.trial_config(self._sampled(trial)).optim.epochs
            if 0 <= run.last_epoch < planned - 1:
                run.set_tags({STOPPED_AT_TAG: str(run.last_epoch), STOPPED_BY_TAG: self.space.scheduler_name})
        self._finish(trial.trial_id, "FAILED" if trial.trial_id in self.failures else "FINISHED")

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
        self.writer.close()

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
