"""A thin, Ray-free wrapper over ``MlflowClient`` for one run.

The client API (not the fluent one) is used because the Tune driver logs many trials' runs
at once and the fluent API keeps one global active run.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from distmtl.tracking.fallback import FallbackWriter
from distmtl.tracking.lineage import code_tags, dataset_input

_RUN_METRIC_NAMES = {"epoch", "best_epoch", "epoch_time_s"}
_BATCH = 100
#: Tag that holds why a run ended FAILED (e.g. "diverged at epoch 3, step 41: loss nan").
FAILURE_TAG = "distmtl.failure_reason"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite store ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def default_journal(name: str, tracking_uri: str) -> Path:
    """Where MLflow records for ``tracking_uri`` wait while it is away: ``mlflow-journal/<name>-<hash>.jsonl``
    in the working directory (the hash of the URI keeps records meant for another store apart)."""
    digest = hashlib.sha1(tracking_uri.encode()).hexdigest()[:8]
    return Path.cwd() / "mlflow-journal" / f"{name}-{digest}.jsonl"


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
    """Create a run (optionally nested under ``parent_run_id``; ``experiment_description`` describes its
    experiment where that has no description yet) with params, tags and the resolved config as
    ``config.yaml``; then log metrics; then end it. Writes go through a :class:`FallbackWriter`, so a
    tracking server that goes away costs no record (see :mod:`distmtl.tracking.fallback`)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        config: dict[str, Any],
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        writer: FallbackWriter | None = None,
        experiment_description: str | None = None,
    ) -> None:
        self.writer = writer or FallbackWriter(tracking_uri, default_journal(experiment or "runs", tracking_uri))
        self.client = self.writer.client
        self.last_epoch = -1
        if run_id:
            self.run_id = run_id
            return
        tags = {**code_tags(), **(tags or {})}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id  # shows the run nested under its parent in the UI
        self.run_id = self.writer.create_run(experiment, run_name, tags, experiment_description)
        params = {k: v[:6000] for k, v in flatten_params(config).items()}
        names = list(params)
        for i in range(0, len(names), _BATCH):
            self.writer.write({"op": "log_batch", "run": self.run_id, "params": {k: params[k] for k in names[i : i + _BATCH]}})
        self.writer.write({"op": "log_dict", "run": self.run_id, "dict": config, "file": "config.yaml"})
        if isinstance(config.get("data"), dict):
            self.writer.write({"op": "log_input", "run": self.run_id, "dataset": dataset_input(config["data"])})

    @classmethod
    def attach(cls, tracking_uri: str, run_id: str, writer: FallbackWriter | None = None) -> MlflowRun:
        """Log into an existing run (e.g. from another process than the one that created it); epochs it
        already holds are not logged again, whichever process logged them."""
        run = cls(tracking_uri, "", "", {}, run_id=run_id, writer=writer)
        try:
            run.last_epoch = int(run.client.get_run(run_id).data.metrics.get("epoch", -1))
        except (MlflowException, OSError):  # the store is away: its journal keeps the order; nothing to skip known
            pass
        return run

    @classmethod
    def reopen(cls, writer: FallbackWriter, run_id: str) -> MlflowRun:
        """Continue an existing run (a resumed trial): mark it RUNNING again; epochs it holds are not logged again."""
        run = cls.attach(writer.tracking_uri, run_id, writer)
        writer.write({"op": "status", "run": run_id, "status": "RUNNING"})
        return run

    @property
    def real_run_id(self) -> str:
        """The run's MLflow id (a run created while the store was away has a placeholder until replayed)."""
        return self.writer.resolve(self.run_id)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """Log every distmtl metric in ``metrics`` at ``step`` (the epoch)."""
        now = int(time.time() * 1000)
        batch = [[k, float(v), now, step] for k, v in metrics.items() if is_run_metric(k, v)]
        for i in range(0, len(batch), _BATCH):
            self.writer.write({"op": "log_batch", "run": self.run_id, "metrics": batch[i : i + _BATCH]})

    def log_epoch(self, metrics: dict[str, Any]) -> bool:
        """Log one epoch's report at its epoch unless this run already holds that epoch (a resumed run
        reports the epoch it resumed from again). Returns whether it was logged."""
        epoch = int(metrics["epoch"])
        if epoch <= self.last_epoch:
            return False
        self.log_metrics(metrics, step=epoch)
        self.last_epoch = epoch
        return True

    def log_checkpoint_artifacts(self, checkpoint_dir: str | Path) -> None:
        """Log the files a checkpoint carries in ``artifacts/`` (plots, JSON) under ``artifacts/``."""
        for path in sorted(Path(checkpoint_dir, "artifacts").glob("*")):
            self.writer.write({"op": "log_artifact", "run": self.run_id, "path": str(path), "artifact_path": "artifacts"})

    def log_text(self, text: str, file: str) -> None:
        """Log ``text`` as the artifact ``file`` of this run."""
        with tempfile.TemporaryDirectory(prefix="distmtl-text-") as directory:
            path = Path(directory, file)
            path.write_text(text)
            self.writer.write({"op": "log_artifact", "run": self.run_id, "path": str(path), "artifact_path": None})

    def set_tags(self, tags: dict[str, str]) -> None:
        self.writer.write({"op": "log_batch", "run": self.run_id, "tags": {k: str(v) for k, v in tags.items()}})

    def finish(self, status: str = "FINISHED") -> None:
        """End the run as FINISHED, FAILED or KILLED."""
        self.writer.write({"op": "status", "run": self.run_id, "status": status, "time": int(time.time() * 1000)})
