"""Run one cell of a recipe (a variant on one seed) through the engine, tracked as a child MLflow run with
the same per-epoch logging and logged model as ``distmtl train``, plus the metrics computed after training."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from distmtl.config.schema import Config
from distmtl.engine import LocalReporter
from distmtl.engine.checkpoint import TrainingState
from distmtl.engine.export import log_best_model
from distmtl.recipes.base import Variant
from distmtl.tracking import MlflowRun


class TrackingReporter(LocalReporter):
    """A :class:`LocalReporter` that also logs every epoch's report and checkpoint artifacts into an MLflow run,
    as the Ray path's ``MlflowEpochLogger`` does for ``distmtl train``."""

    def __init__(self, run: MlflowRun, output_dir: Path) -> None:
        super().__init__(output_dir)
        self.run = run

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        super().report(metrics, checkpoint_dir)
        if self.run.log_epoch(metrics) and checkpoint_dir:
            self.run.log_checkpoint_artifacts(checkpoint_dir)


@dataclass(frozen=True)
class CellResult:
    """What a finished cell gives the table: its metrics (final report plus extras), checkpoint and time."""

    metrics: dict[str, float]
    checkpoint: Path
    run_id: str
    seconds: float


def run_cell(variant: Variant, config: Config, run: MlflowRun, output_dir: Path) -> CellResult:
    """Train ``config`` in this process into ``run``, add the variant's extra metrics and log the best model
    (the caller ends the run)."""
    started = time.perf_counter()
    reporter = TrackingReporter(run, output_dir)
    final = variant.runner(config, reporter)
    checkpoint = reporter.checkpoints[-1]
    extra = variant.extra(config, checkpoint, final) if variant.extra else {}
    run.log_metrics(extra, step=config.optim.epochs - 1)
    log_best_model(run, checkpoint)
    return CellResult({**final, **extra}, checkpoint, run.real_run_id, time.perf_counter() - started)


def final_structure(checkpoint: Path) -> dict:
    """The model structure (e.g. Selective Sharing's ``branch_of``) at the end of training."""
    return TrainingState.load(checkpoint).structure
