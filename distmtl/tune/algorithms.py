"""The search algorithm and trial scheduler a space file names, built the one way sweeps and benchmarks use."""

from __future__ import annotations

from typing import Any

from distmtl.tune.reporting import EPOCHS_DONE
from distmtl.tune.space import Space


def build_searcher(space: Space, study_name: str) -> Any:
    """Ray Tune's OptunaSearch with the space's sampler (TPE, random or NSGA-II, seeded), multi-objective for a
    Pareto space, its study kept in ``searcher.storage`` (under ``study_name``) when the space names one."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    f = space.file
    sampler = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
               "nsga2": optuna.samplers.NSGAIISampler}[f.searcher.sampler](seed=f.searcher.seed)
    storage = optuna.storages.RDBStorage(f.searcher.storage) if f.searcher.storage else None
    objectives = {"metric": space.metrics, "mode": space.modes} if space.pareto else {}
    return OptunaSearch(sampler=sampler, storage=storage, study_name=study_name if storage else None, **objectives)


def build_scheduler(space: Space) -> Any:
    """ASHA on epochs done (grace period capped at the base config's epochs), or FIFO."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if space.scheduler_name != "asha":
        return FIFOScheduler()
    epochs, scheduler = space.base_config.optim.epochs, space.file.scheduler
    return ASHAScheduler(time_attr=EPOCHS_DONE, max_t=epochs, grace_period=min(scheduler.grace_period, epochs),
                         reduction_factor=scheduler.reduction_factor)
