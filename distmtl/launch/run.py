"""``distmtl train``: one Ray Train run of a config, tracked as one MLflow run."""

from __future__ import annotations

import logging
import time
from typing import Any

from distmtl.config.schema import Config
from distmtl.engine.export import log_best_model
from distmtl.errors import FAILURE_KEY, RunFailed
from distmtl.launch.capacity import Request
from distmtl.launch.cluster import ensure_ray
from distmtl.launch.cross_validation import fold_configs, summarize
from distmtl.launch.epoch_logger import MlflowEpochLogger
from distmtl.launch.ray_train import Resources, build_trainer
from distmtl.tracking import MlflowRun, default_journal

log = logging.getLogger("distmtl")


def train_on_ray(
    config: Config,
    *,
    workers: int | tuple[int, int],
    gpus_per_worker: float,
    cpus: float | None,
    storage_path: str,
    name: str,
    tracking_uri: str,
    experiment: str,
    resume_from: str | None = None,
    address: str | None = None,
    cv_folds: int | None = None,
) -> dict[str, Any]:
    """Run ``config`` on ``workers`` DDP workers; return the final report (test metrics at the best epoch).

    With ``cv_folds`` = K, run the K folds of grouped cross-validation one after the other, each a
    Train run and a child MLflow run of one parent run, and return the mean ± std summary.
    """
    fewest = workers[0] if isinstance(workers, tuple) else workers  # an elastic run must fit at its minimum
    layout = ensure_ray(Request(fewest, gpus_per_worker, cpus), address)
    resources = Resources(workers, gpus_per_worker, layout.cpus_per_worker)
    tags = {"distmtl.workers": "-".join(map(str, workers)) if isinstance(workers, tuple) else str(workers)}
    if not cv_folds:
        return _tracked_run(config, resources, storage_path, name, tracking_uri, experiment, tags, resume_from)
    with MlflowRun(tracking_uri, experiment, name, config.model_dump(), {**tags, "distmtl.cv_folds": str(cv_folds)},
                   command="train") as parent:
        folds = [
            _tracked_run(fold, resources, storage_path, f"{name}-fold{i}", tracking_uri, experiment,
                         {**tags, "distmtl.cv_fold": str(i)}, parent_run_id=parent.run_id)
            for i, fold in enumerate(fold_configs(config, cv_folds))
        ]
        summary = summarize(folds)
        parent.log_metrics(summary, step=0)
    return summary


def _tracked_run(
    config: Config, resources: Resources, storage_path: str, name: str, tracking_uri: str, experiment: str,
    tags: dict[str, str], resume_from: str | None = None, parent_run_id: str | None = None,
) -> dict[str, Any]:
    """One Train run logged live (per epoch, by the Train controller) into its own MLflow run, then its best model;
    a run whose training failed (diverged) ends FAILED with the reason as the tag ``distmtl.failure_reason`` and
    raises :class:`RunFailed`."""
    journal = default_journal(name, tracking_uri)
    started = time.perf_counter()
    with MlflowRun(tracking_uri, experiment, name, config.model_dump(), tags, command="train",
                   parent_run_id=parent_run_id, journal=journal) as run:
        trainer = build_trainer(config, resources, storage_path, name, resume_from=resume_from,
                                callbacks=[MlflowEpochLogger(tracking_uri, run.run_id, str(journal))])
        result = trainer.fit()
        failure = (result.return_value or {}).get(FAILURE_KEY)
        if failure:
            run.fail(failure)
            raise RunFailed(f"{failure} (run '{name}', MLflow run {run.real_run_id} marked FAILED)")
        with result.checkpoint.as_directory() as directory:
            log_best_model(run, directory)
    log.info("run '%s' finished in %.1f s; checkpoints in %s; MLflow run %s", name, time.perf_counter() - started,
             result.path, run.real_run_id)
    return dict(result.metrics or {})
