"""A sweep's outcome, computed once when it ends and handed to the console and to MLflow: every trial as it
ended, the scored trials ranked by their best epoch, the best trial or (several metrics) the Pareto front, and
which trials failed and why.

It reads Tune's own record of the trials (its saved experiment state): each trial's status, last report and
best value of each metric over its reports (``Trial.metric_analysis``, what ``ResultGrid.get_best_result``
compares with ``scope="all"``); the front is Optuna's (:mod:`distmtl.tune.pareto`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ray.tune.experiment import Trial

from distmtl.errors import FAILURE_KEY
from distmtl.tune.hypervolume import front_hypervolume
from distmtl.tune.pareto import pareto_front
from distmtl.tune.space import Space


@dataclass(frozen=True)
class TrialOutcome:
    """How one trial ended: Tune's status, epochs run, its best score on the sweep's (first) metric over its
    epochs (None if it has no finite one), its last report, why it failed (None if it did not) and its searched
    values."""

    trial_id: str
    status: str
    epochs: int
    score: float | None
    last: dict[str, Any]
    failure: str | None
    searched: dict[str, Any]

    @property
    def ended(self) -> bool:
        """Whether the trial ended (finished, stopped by the scheduler or failed) rather than waits or was cut off."""
        return self.status in (Trial.TERMINATED, Trial.ERROR)

    @property
    def finished(self) -> bool:
        """Whether the trial ended without failing: the trials a Pareto front is drawn from."""
        return self.status == Trial.TERMINATED and self.failure is None

    def values(self, metrics: list[str]) -> list[float]:
        """Its last report's value of each of ``metrics`` (NaN where it reported none)."""
        return [float(self.last.get(m, math.nan)) for m in metrics]


@dataclass(frozen=True)
class SweepOutcome:
    """Every trial (in Tune's order) and what the sweep found: ``scored`` (the trials that did not fail and have
    a score, in Tune's order), ``ranking`` (those, best first), ``best`` (its first; none for a Pareto sweep)
    and ``front`` (a Pareto sweep's finished trials that no other finished trial dominates on every metric, with the
    hypervolume they dominate)."""

    trials: list[TrialOutcome]
    scored: list[TrialOutcome]
    ranking: list[TrialOutcome]
    front: list[TrialOutcome]
    total: int  # trials the sweep is to run (those it was asked for, or more if Tune made more)
    hypervolume: tuple[float, list[float]] | None = None  # a Pareto sweep's, and the reference point it used

    @property
    def best(self) -> TrialOutcome | None:
        return self.ranking[0] if self.ranking else None

    @property
    def failed(self) -> dict[str, str]:
        """Trial id → why it failed."""
        return {t.trial_id: t.failure for t in self.trials if t.failure is not None}

    @property
    def ended(self) -> int:
        return sum(t.ended for t in self.trials)

    @property
    def interrupted(self) -> bool:
        """Whether the sweep stopped before every trial it is to run ended (``--resume`` continues it)."""
        return self.ended < self.total


def sweep_outcome(trials: list[Trial], space: Space, total: int) -> SweepOutcome:
    """The outcome of a sweep of ``space`` asked to run ``total`` trials, from Tune's ``trials``."""
    outcomes = [trial_outcome(t, space) for t in trials]
    total = max(len(outcomes), total)
    if space.pareto:
        finished = {t.trial_id: t for t in outcomes if t.finished}
        points = {i: t.values(space.metrics) for i, t in finished.items()}
        front = pareto_front(points, space.modes)
        volume = front_hypervolume(list(points.values()), space.modes, space.file.reference_point)
        return SweepOutcome(outcomes, [], [], [finished[i] for i in front], total, volume)
    scored = [t for t in outcomes if t.failure is None and t.score is not None]
    ranking = sorted(scored, key=lambda t: t.score if space.mode == "min" else -t.score)
    return SweepOutcome(outcomes, scored, ranking, [], total)


def trial_outcome(trial: Trial, space: Space) -> TrialOutcome:
    """How ``trial`` ended: its failure is its training's failure report, or the last line of its error."""
    last = dict(trial.last_result or {})
    failure = last.get(FAILURE_KEY) if isinstance(last.get(FAILURE_KEY), str) else None
    if failure is None and trial.status == Trial.ERROR:
        failure = error_line(trial)
    best = (trial.metric_analysis.get(space.tune_metric) or {}).get(space.mode)
    score = float(best) if isinstance(best, (int, float)) and math.isfinite(best) else None
    searched = {k: v for k, v in trial.config.items() if k in space.file.parameters}
    return TrialOutcome(trial.trial_id, trial.status, int(last.get("epoch", -1)) + 1, score, last, failure, searched)


def error_line(trial: Any) -> str:
    """The last line of an errored trial's error (Tune keeps the whole traceback in the trial's folder)."""
    error = trial.get_error()
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] if error else []
    return lines[-1][:500] if lines else "the trial raised an error (see error.txt in its folder)"


def short_value(value: Any) -> str:
    """A sampled value as a table cell or console word: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)
