"""``distmtl train``: one Ray Train run of a config, tracked as one MLflow run."""

from __future__ import annotations

import logging
import time
from typing import Any

from distmtl.config.schema import Config
from distmtl.launch.cluster import cpus_per_worker, ensure_ray
from distmtl.launch.ray_train import MlflowEpochLogger, Resources, build_trainer
from distmtl.tracking import MlflowRun

log = logging.getLogger("distmtl")


def train_on_ray(
    config: Config,
    *,
    workers: int,
    gpus_per_worker: float,
    cpus: float | None,
    storage_path: str,
    name: str,
    tracking_uri: str,
    experiment: str,
    resume_from: str | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Run ``config`` on ``workers`` DDP workers; return the final report (test metrics at the best epoch)."""
    ensure_ray(address)
    resources = Resources(workers, gpus_per_worker, cpus_per_worker(cpus, workers))
    run = MlflowRun(tracking_uri, experiment, name, config.model_dump(),
                    tags={"distmtl.command": "train", "distmtl.workers": str(workers)})
    trainer = build_trainer(config, resources, storage_path, name,
                            callbacks=[MlflowEpochLogger(tracking_uri, run.run_id)], resume_from=resume_from)
    started = time.perf_counter()
    try:
        result = trainer.fit()
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")
    log.info("run '%s' finished in %.1f s; checkpoints in %s; MLflow run %s", name, time.perf_counter() - started,
             result.path, run.run_id)
    return dict(result.metrics or {})
