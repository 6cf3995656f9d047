"""Optuna's own views of a finished sweep — optimisation history and hyperparameter importance — drawn for the
sweep's parent run from the trials Tune ran (as an Optuna study rebuilt from their sampled values and scores)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import optuna

from distmtl.tracking.plots import pyplot
from distmtl.tune.space import Parameter, Space

log = logging.getLogger("distmtl")


def distribution(parameter: Parameter) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution a space parameter samples from."""
    if parameter.type == "choice":
        return optuna.distributions.CategoricalDistribution(parameter.values)
    if parameter.type == "randint":
        return optuna.distributions.IntDistribution(int(parameter.low), int(parameter.high))
    return optuna.distributions.FloatDistribution(parameter.low, parameter.high, log=parameter.type == "loguniform")


def study_of(space: Space, scored: list[tuple[dict[str, Any], float]]) -> optuna.Study:
    """A study holding each (sampled values, score) as a completed trial, in the space's direction."""
    study = optuna.create_study(direction="minimize" if space.mode == "min" else "maximize")
    distributions = {k: distribution(p) for k, p in space.file.parameters.items()}
    for sampled, score in scored:
        study.add_trial(optuna.trial.create_trial(params=sampled, distributions={k: distributions[k] for k in sampled},
                                                  value=score))
    return study


def save_study_figures(study: optuna.Study, directory: Path) -> list[Path]:
    """``optimization_history.png`` and, with at least two trials, ``param_importances.png`` in ``directory``."""
    from optuna.visualization import matplotlib as views

    plt, saved = pyplot(), []
    figures = [("optimization_history.png", views.plot_optimization_history)]
    if len(study.trials) >= 2:
        figures.append(("param_importances.png", views.plot_param_importances))
    for name, view in figures:
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib views experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = view(study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances when every trial sampled the same values
            log.info("sweep figure %s not drawn: %s", name, exc)
            continue
        axes.figure.tight_layout()
        axes.figure.savefig(directory / name, dpi=90)
        plt.close(axes.figure)
        saved.append(directory / name)
    return saved
