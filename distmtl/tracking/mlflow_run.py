"""A thin, Ray-free wrapper over ``MlflowClient`` for one run.

The client API (not the fluent one) is used because the Tune driver logs many trials' runs
at once and the fluent API keeps one global active run.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

_RUN_METRIC_NAMES = {"epoch", "best_epoch", "epoch_time_s"}
_BATCH = 100


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite store ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def is_run_metric(key: str, value: Any) -> bool:
    """Whether a reported value is one of distmtl's metrics (not Tune's bookkeeping) and loggable."""
    return (
        ("/" in key or key in _RUN_METRIC_NAMES)
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


def flatten_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"optim.lr": "0.001", ...}`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


class MlflowRun:
    """Create a run (optionally nested under ``parent_run_id``) with params, tags and the resolved config as
    ``config.yaml``; then log metrics; then end it."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        config: dict[str, Any],
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        self.client = MlflowClient(tracking_uri)
        if run_id:
            self.run_id = run_id
            return
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        tags = dict(tags or {})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id  # shows the run nested under its parent in the UI
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, v[:6000]) for k, v in flatten_params(config).items()]
        for i in range(0, len(params), _BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + _BATCH])
        self.client.log_dict(self.run_id, config, "config.yaml")

    @classmethod
    def attach(cls, tracking_uri: str, run_id: str) -> MlflowRun:
        """Log into an existing run (e.g. from another process than the one that created it)."""
        return cls(tracking_uri, "", "", {}, run_id=run_id)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """Log every distmtl metric in ``metrics`` at ``step`` (the epoch)."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if is_run_metric(k, v)]
        for i in range(0, len(batch), _BATCH):
            self.client.log_batch(self.run_id, metrics=batch[i : i + _BATCH])

    def log_checkpoint_artifacts(self, checkpoint_dir: str | Path) -> None:
        """Log the files a checkpoint carries in ``artifacts/`` (plots, JSON) under ``artifacts/``."""
        for path in sorted(Path(checkpoint_dir, "artifacts").glob("*")):
            self.client.log_artifact(self.run_id, str(path), "artifacts")

    def finish(self, status: str = "FINISHED") -> None:
        """End the run as FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status=status)
