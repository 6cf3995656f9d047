"""The Pareto set of a multi-objective sweep: the trials that no other finished trial dominates, found by Optuna."""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna


def pareto_front(points: dict[str, Sequence[float]], modes: Sequence[str]) -> list[str]:
    """The keys of ``points`` (trial id → objective values; ``modes``: min/max) that no other point dominates (is at
    least as good on every objective and better on one), in their order: the best trials of an Optuna study of
    them. Points with a missing or non-finite value take no part."""
    finite = [k for k, v in points.items() if len(v) == len(modes) and all(math.isfinite(x) for x in v)]
    if not finite:
        return []
    study = optuna.create_study(directions=["maximize" if m == "max" else "minimize" for m in modes])
    study.add_trials([optuna.trial.create_trial(values=list(points[k])) for k in finite])
    front = {t.number for t in study.best_trials}
    return [k for i, k in enumerate(finite) if i in front]
