"""Run a sweep: every trial is a Ray Train run (DDP over N workers) inside a Tune function trainable.

This is the Train V2 pattern: ``Tuner(trainer)`` is deprecated, so a function trainable builds a
``TorchTrainer`` named after its trial and forwards the workers' per-epoch reports to Tune with
``TuneReportCallback``, where OptunaSearch and ASHA see them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from distmtl.launch.capacity import TRIAL_CPUS, Request, concurrency
from distmtl.launch.cluster import ensure_ray, resolve_storage
from distmtl.launch.cross_validation import fold_configs, summarize
from distmtl.launch.ray_train import Resources, build_trainer
from distmtl.tune.space import Space

log = logging.getLogger("distmtl")


@dataclass
class SweepOptions:
    """Command-line choices that override the space file (None keeps the file's value)."""

    num_samples: int | None = None
    workers_per_trial: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    max_concurrent: int | None = None
    experiment: str | None = None
    storage: str = "ray_results"
    mlflow_uri: str | None = None
    address: str | None = None


@dataclass
class SweepResult:
    """The best trial (by its best epoch on the space's metric) and how many trials ran."""

    best_trial_id: str
    best_config: dict[str, Any]
    best_metrics: dict[str, Any]
    num_trials: int
    storage_path: str
    experiment: str


def trial(sampled: dict[str, Any], *, space: Space, resources: Resources, storage_path: str, experiment: str) -> None:
    """The Tune function trainable: one Train run for one sampled configuration (one per fold under CV)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    config = space.trial_config(sampled)
    trial_id = tune.get_context().get_trial_id()
    storage = f"{storage_path}/{experiment}-train"
    if not space.file.cv:
        build_trainer(config, resources, storage, name=trial_id, callbacks=[TuneReportCallback()]).fit()
        return
    folds = [build_trainer(fold, resources, storage, name=f"{trial_id}-fold{i}").fit().metrics
             for i, fold in enumerate(fold_configs(config, space.file.cv))]
    tune.report({**summarize(folds), "epoch": config.optim.epochs - 1})


def run_sweep(space: Space, options: SweepOptions) -> SweepResult:
    """Start (or join) Ray, run the sweep, log every trial to MLflow, and return the best trial."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from distmtl.tracking import default_tracking_uri
    from distmtl.tune.tracking_callback import MlflowTrialLogger

    f = space.file
    experiment = options.experiment or space.path.stem
    storage_path = resolve_storage(options.storage)
    tracking_uri = options.mlflow_uri or default_tracking_uri()
    workers = options.workers_per_trial or f.resources.workers_per_trial
    gpus = f.resources.gpus_per_worker if options.gpus_per_worker is None else options.gpus_per_worker
    num_samples = options.num_samples or f.num_samples
    layout = ensure_ray(Request(workers, gpus, options.cpus_per_worker or f.resources.cpus_per_worker, TRIAL_CPUS,
                                workers_flag="--workers-per-trial"), options.address)
    resources = Resources(workers, gpus, layout.cpus_per_worker)
    max_concurrent, limit = concurrency(layout.max_concurrent, options.max_concurrent or f.max_concurrent, num_samples,
                                        tpe=f.searcher.sampler == "tpe")
    log.info("sweep '%s': %d trial(s) of %d worker(s) × %.2g CPU, %.2g GPU, %d at once (%s)%s; MLflow at %s",
             experiment, num_samples, workers, resources.cpus_per_worker, gpus, max_concurrent, limit,
             ", trial drivers on the head node" if layout.driver_on_head else "", tracking_uri)

    sampler = (optuna.samplers.TPESampler(seed=f.searcher.seed) if f.searcher.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=f.searcher.seed))
    storage = optuna.storages.RDBStorage(f.searcher.storage) if f.searcher.storage else None
    searcher = OptunaSearch(sampler=sampler, storage=storage, study_name=experiment if storage else None)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=space.base_config.optim.epochs,
                               grace_period=min(f.scheduler.grace_period, space.base_config.optim.epochs),
                               reduction_factor=f.scheduler.reduction_factor)
                 if space.scheduler_name == "asha" else FIFOScheduler())
    trainable = tune.with_resources(
        functools.partial(trial, space=space, resources=resources, storage_path=storage_path, experiment=experiment),
        layout.driver_resources(TRIAL_CPUS),
    )
    tuner = tune.Tuner(
        trainable,
        param_space=space.tune_space(),
        tune_config=tune.TuneConfig(
            metric=space.tune_metric, mode=space.mode, search_alg=searcher, scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
        ),
        run_config=tune.RunConfig(name=experiment, storage_path=storage_path,
                                  callbacks=[MlflowTrialLogger(tracking_uri, experiment, space)]),
    )
    results = tuner.fit()
    best = results.get_best_result(metric=space.tune_metric, mode=space.mode, scope="all")
    sampled = {k: v for k, v in best.config.items() if k in f.parameters}
    return SweepResult(
        best_trial_id=best.metrics.get("trial_id", "?"),
        best_config=sampled,
        best_metrics={k: v for k, v in best.metrics.items() if "/" in k or k in ("epoch", "best_epoch")},
        num_trials=len(results),
        storage_path=storage_path,
        experiment=experiment,
    )

