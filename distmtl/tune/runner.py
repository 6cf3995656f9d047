"""Run a sweep: every trial is a Ray Train run (DDP over N workers) inside a Tune function trainable.

This is the Train V2 pattern: ``Tuner(trainer)`` is deprecated, so a function trainable builds a
``TorchTrainer`` named after its trial and forwards the workers' per-epoch reports to Tune with
``TuneReportCallback``, where OptunaSearch and ASHA see them.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

from distmtl.errors import FAILURE_KEY, DistmtlError
from distmtl.launch.capacity import TRIAL_CPUS, Request, concurrency
from distmtl.launch.cluster import ensure_ray, resolve_storage
from distmtl.launch.cross_validation import fold_configs, summarize
from distmtl.launch.ray_train import Resources, build_trainer
from distmtl.tune.algorithms import build_scheduler, build_searcher
from distmtl.tune.outcome import SweepOutcome, sweep_outcome
from distmtl.tune.reporting import TrialReport, for_tune, trial_facts
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
    resume: bool = False
    verbose: bool = False  # Ray's own output and the workers' lines; otherwise one line per trial event


@dataclass(frozen=True)
class SweepResult:
    """A sweep that ran: its outcome (every trial; the best one or the Pareto front; failures; whether it was
    interrupted before its end) and where Tune keeps it."""

    outcome: SweepOutcome
    storage_path: str
    experiment: str


def trial(sampled: dict[str, Any], *, space: Space, resources: Resources, storage_path: str, experiment: str) -> None:
    """The Tune function trainable: one Train run for one sampled configuration (one per fold under CV)."""
    from ray import tune
    config = space.trial_config(sampled)
    facts = trial_facts(config)
    trial_id = tune.get_context().get_trial_id()
    storage = f"{storage_path}/{experiment}-train"
    if not space.file.cv:
        callback = TrialReport(space.objectives, facts)
        _report_failure(build_trainer(config, resources, storage, name=trial_id, callbacks=[callback]).fit(), space,
                        facts)
        return
    folds = []
    for i, fold in enumerate(fold_configs(config, space.file.cv)):
        result = build_trainer(fold, resources, storage, name=f"{trial_id}-fold{i}").fit()
        if _report_failure(result, space, facts, f"fold {i}: "):
            return
        folds.append(result.metrics)
    tune.report(for_tune({**summarize(folds), "epoch": config.optim.epochs - 1}, space.objectives, facts))


def _report_failure(result: Any, space: Space, facts: dict[str, Any], prefix: str = "") -> bool:
    """Tell Tune (worst-case score) that a Train run's training failed; returns whether it did."""
    from ray import tune

    failure = result.return_value or {}
    if FAILURE_KEY in failure:
        tune.report(for_tune({**failure, FAILURE_KEY: prefix + failure[FAILURE_KEY]}, space.objectives, facts))
    return FAILURE_KEY in failure


def run_sweep(space: Space, options: SweepOptions) -> SweepResult:
    """Start (or join) Ray, run the sweep, log every trial and the sweep's outcome to MLflow, and return it."""
    import optuna
    from ray import tune

    from distmtl.tracking import default_tracking_uri
    from distmtl.tune.console import ConsoleProgress, status_table
    from distmtl.tune.sweep_run import log_outcome, open_sweep_run
    from distmtl.tune.tracking_callback import MlflowTrialLogger

    f = space.file
    experiment = options.experiment or space.path.stem
    storage_path = resolve_storage(options.storage)
    sweep_path = f"{storage_path}/{experiment}"
    num_samples = options.num_samples or f.num_samples
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the legacy reporter: silent at verbose=0, else status_table's table
    if not options.verbose:  # Tune's banners and Optuna's notices: ConsoleProgress speaks instead
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_sweep_resume(space, sweep_path, options.resume, num_samples)
    tracking_uri = options.mlflow_uri or default_tracking_uri()
    workers = options.workers_per_trial or f.resources.workers_per_trial
    gpus = f.resources.gpus_per_worker if options.gpus_per_worker is None else options.gpus_per_worker
    layout = ensure_ray(Request(workers, gpus, options.cpus_per_worker or f.resources.cpus_per_worker, TRIAL_CPUS,
                                workers_flag="--workers-per-trial"), options.address, verbose=options.verbose)
    resources = Resources(workers, gpus, layout.cpus_per_worker)
    max_concurrent, limit = concurrency(layout.max_concurrent, options.max_concurrent or f.max_concurrent, num_samples,
                                        tpe=f.searcher.sampler == "tpe")
    log.info("sweep '%s': %d trial(s) of %d worker(s) × %.2g CPU, %.2g GPU, %d at once (%s)%s; MLflow at %s",
             experiment, num_samples, workers, resources.cpus_per_worker, gpus, max_concurrent, limit,
             ", trial drivers on the head node" if layout.driver_on_head else "", tracking_uri)

    searcher, scheduler = build_searcher(space, experiment, num_samples), build_scheduler(space)
    trainable = tune.with_resources(
        functools.partial(trial, space=space, resources=resources, storage_path=storage_path, experiment=experiment),
        layout.driver_resources(TRIAL_CPUS),
    )
    with open_sweep_run(tracking_uri, experiment, space, sweep_path) as parent:
        if options.resume:  # the sweep's own settings (searcher state, scheduler, MLflow logger) come back with it
            log.info("resuming sweep %s: finished trials stay, the others continue from their checkpoints", sweep_path)
            tuner = tune.Tuner.restore(sweep_path, trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    metric=None if space.pareto else space.tune_metric, mode=None if space.pareto else space.mode,
                    search_alg=searcher, scheduler=scheduler,
                    num_samples=num_samples,
                    max_concurrent_trials=max_concurrent,
                    trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
                ),
                run_config=tune.RunConfig(
                    name=experiment, storage_path=storage_path, verbose=1 if options.verbose else 0,
                    progress_reporter=status_table(space) if options.verbose else None,
                    callbacks=[MlflowTrialLogger(tracking_uri, experiment, space, sweep_path, parent.run_id),
                               ConsoleProgress(space, num_samples)],
                ),
            )
        tuner.fit()
        outcome = saved_outcome(space, sweep_path, num_samples)
        log_outcome(parent, experiment, space, outcome)
    return SweepResult(outcome, storage_path, experiment)


def check_sweep_resume(space: Space, sweep_path: str, resume: bool, num_samples: int) -> None:
    """Refuse ``--resume`` without a sweep to resume, and a new sweep over an unfinished one (which would
    make it impossible to resume) — before Ray starts."""
    from ray import tune

    if resume:
        if not tune.Tuner.can_restore(sweep_path):
            raise DistmtlError(f"--resume: no sweep to resume at {sweep_path} (check --storage and --experiment)")
        return
    if not tune.Tuner.can_restore(sweep_path):
        return
    saved = saved_outcome(space, sweep_path, num_samples)
    if saved.interrupted:
        raise DistmtlError(f"{sweep_path} holds an unfinished sweep ({saved.ended} of {saved.total} trials ended): add "
                           "--resume to continue it, or start a new one under another --experiment (or delete that "
                           "folder)")


def saved_outcome(space: Space, sweep_path: str, num_samples: int) -> SweepOutcome:
    """The outcome of the sweep at ``sweep_path`` by its saved state: Tune saves it before it stops the trials of an
    interrupted sweep (which it then reports as terminated), so those count as not ended."""
    from ray.tune import ExperimentAnalysis

    return sweep_outcome(ExperimentAnalysis(sweep_path).trials, space, num_samples)
