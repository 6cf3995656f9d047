"""Per-epoch MLflow logging of a Ray Train run, done by the Train controller (not the workers)."""

from __future__ import annotations

from typing import Any

from ray.train import Checkpoint, UserCallback

from distmtl.tracking import MlflowRun, default_journal


class MlflowEpochLogger(UserCallback):
    """Logs rank 0's per-epoch metrics into an MLflow run that the driver created (runs on the Train controller);
    records that MLflow does not take wait in ``journal`` (see :mod:`distmtl.tracking.fallback`; by default
    ``mlflow-journal/<run id>.jsonl`` in the driver's working directory)."""

    def __init__(self, tracking_uri: str, run_id: str, journal: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.journal = journal or str(default_journal(run_id, tracking_uri))
        self._run: MlflowRun | None = None

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        if self._run is None:
            self._run = MlflowRun.attach(self.tracking_uri, self.run_id, journal=self.journal)
        if self._run.log_epoch(metrics[0]) and checkpoint is not None:
            with checkpoint.as_directory() as directory:
                self._run.log_checkpoint_artifacts(directory)
