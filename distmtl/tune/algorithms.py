"""The search algorithm and trial scheduler a space file names, built the one way sweeps and benchmarks use."""

from __future__ import annotations

from typing import Any

from distmtl.tune.reporting import EPOCHS_DONE
from distmtl.tune.space import Space


def build_searcher(space: Space, study_name: str, num_samples: int | None = None) -> Any:
    """Ray Tune's OptunaSearch over the space's define-by-run parameters (conditional ones sampled only where they
    apply; the Tuner's ``param_space`` stays empty) with the space's sampler (TPE, random or NSGA-II, seeded),
    multi-objective for a Pareto space, its study kept in ``searcher.storage`` (under ``study_name``) when the space
    names one.
    TPE samples its first :func:`startup_trials` of the sweep's ``num_samples`` (the space's unless given) at random."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    f = space.file
    seed = f.searcher.seed
    sampler = {"tpe": lambda: optuna.samplers.TPESampler(
                   seed=seed, n_startup_trials=startup_trials(num_samples or f.num_samples)),
               "random": lambda: optuna.samplers.RandomSampler(seed=seed),
               "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed)}[f.searcher.sampler]()
    storage = optuna.storages.RDBStorage(f.searcher.storage) if f.searcher.storage else None
    objectives = {"metric": space.metrics, "mode": space.modes} if space.pareto else \
        {"metric": space.tune_metric, "mode": space.mode}
    return OptunaSearch(space=space.search_space(), sampler=sampler, storage=storage,
                        study_name=study_name if storage else None, **objectives)


def startup_trials(num_samples: int) -> int:
    """Trials TPE samples at random before it models the objective: a quarter of the sweep (the share distmtl
    also lets run at once before any has finished), at least 2 and at most Optuna's default of 10. Optuna's
    fixed 10 suits long studies; in a 16-trial sweep it would leave TPE 6 trials to use what it learnt."""
    return min(10, max(2, num_samples // 4))


def build_scheduler(space: Space) -> Any:
    """ASHA on epochs done, multi-objective ASHA for a Pareto sweep (grace period capped at the base config's
    epochs), or FIFO."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from distmtl.tune.moasha import MultiObjectiveASHA

    if not space.stops_early:
        return FIFOScheduler()
    epochs, scheduler = space.base_config.optim.epochs, space.file.scheduler
    rungs = dict(max_t=epochs, grace_period=min(scheduler.grace_period, epochs),
                 reduction_factor=scheduler.reduction_factor)
    if space.scheduler_name == "moasha":
        return MultiObjectiveASHA(space.objectives, time_attr=EPOCHS_DONE, **rungs)
    return ASHAScheduler(time_attr=EPOCHS_DONE, **rungs)
