"""A Tune callback (on the driver) that gives every trial one MLflow run.

It runs in the Tune driver, so one process writes the store however many trials run at once
(SQLite copes; for a cluster point it at an ``mlflow server``).
"""

from __future__ import annotations

from typing import Any

from ray.train import Checkpoint
from ray.tune import Callback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from distmtl.tracking import MlflowRun
from distmtl.tune.space import Space


class MlflowTrialLogger(Callback):
    """Run per trial: params = the resolved config (searched values included), per-epoch metrics, config.yaml."""

    def __init__(self, tracking_uri: str, experiment: str, space: Space) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.space = space
        self.runs: dict[str, MlflowRun] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        sampled = {k: v for k, v in trial.config.items() if k in self.space.file.parameters}
        config = self.space.trial_config(sampled).model_dump()
        tags = {"distmtl.trial_id": trial.trial_id, "distmtl.space": str(self.space.path),
                **{f"searched.{k}": str(v) for k, v in sampled.items()}}
        self.runs[trial.trial_id] = MlflowRun(self.tracking_uri, self.experiment, f"trial-{trial.trial_id}", config, tags)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run = self.runs.get(trial.trial_id)
        if run is None:
            return
        run.log_metrics(result, step=int(result.get("epoch", result.get("training_iteration", 0))))
        if result.get(CHECKPOINT_PATH_KEY):
            with Checkpoint(result[CHECKPOINT_PATH_KEY]).as_directory() as directory:
                run.log_checkpoint_artifacts(directory)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "FAILED")

    def _finish(self, trial: Any, status: str) -> None:
        run = self.runs.pop(trial.trial_id, None)
        if run is not None:
            run.finish(status)
