"""Multi-objective ASHA: asynchronous successive halving that ranks trials by several metrics at once.

Rungs and promotion follow Ray Tune's ``AsyncHyperBandScheduler`` (one bracket): milestones at
``grace_period · η^k`` epochs up to ``max_t``; when a trial first reports at or past a milestone it is
compared with the trials already recorded there, continues or stops at once (no trial waits for others),
and its values are recorded; a trial that reaches ``max_t`` ends. What changes is the comparison (Schmucker
et al. 2021, "Multi-objective Asynchronous Successive Halving"): a single metric's percentile cut-off
becomes a ranking of the ``N`` trials recorded at the rung (the newcomer included) by

1. non-dominated sorting — front 0 is the trials nothing at the rung dominates, front 1 those only front 0
   dominates, and so on; then
2. within a front, NSGA-II's crowding distance (the sum over objectives of the gap between a trial's two
   neighbours along that objective, divided by the front's range on it; a front's extremes get infinity),
   larger first, so that the survivors spread along the front instead of bunching at one trade-off.

The newcomer continues when fewer than ``⌈N/η⌉`` recorded trials rank strictly before it (an earlier
front, or its own front with a larger crowding distance): it is in the top 1/η, and an exact tie goes its
way, as a value equal to ASHA's cut-off does. Objectives may mix ``min`` and ``max``. A report whose
objectives are not all finite (a failed trial's worst-case report) stops the trial unless it is alone at
the rung, and is not recorded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler


def rank_order(points: np.ndarray, modes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(non-dominated front index, crowding distance within that front) of each row of ``points``."""
    import moocore

    fronts = np.asarray(moocore.pareto_rank(points, maximise=[m == "max" for m in modes]))
    crowding = np.zeros(len(points))
    for front in np.unique(fronts):
        members = np.flatnonzero(fronts == front)
        crowding[members] = crowding_distance(points[members])
    return fronts, crowding


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row of one front: direction-free, so no mode is needed."""
    distance = np.zeros(len(points))
    if len(points) <= 2:
        return np.full(len(points), math.inf)
    for column in points.T:
        order = np.argsort(column, kind="stable")
        spread = column[order[-1]] - column[order[0]]
        distance[order[[0, -1]]] = math.inf
        if spread > 0:
            distance[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / spread
    return distance


def continues(point: Sequence[float], recorded: Sequence[Sequence[float]], modes: Sequence[str],
              reduction_factor: float) -> bool:
    """Whether a trial reaching a rung with objective values ``point`` continues, given the values of the
    trials already recorded at that rung (see the module's docstring for the rule)."""
    if not all(math.isfinite(x) for x in point):
        return not recorded
    everyone = np.array([*recorded, point], dtype=float).reshape(len(recorded) + 1, len(modes))
    fronts, crowding = rank_order(everyone, modes)
    mine, my_crowding = fronts[-1], crowding[-1]
    ahead = np.sum((fronts[:-1] < mine) | ((fronts[:-1] == mine) & (crowding[:-1] > my_crowding)))
    return bool(ahead < math.ceil(len(everyone) / reduction_factor))


class MultiObjectiveASHA(FIFOScheduler):
    """Ray Tune scheduler: ASHA's rungs on ``time_attr`` with promotion by :func:`continues`.

    ``objectives`` are (metric, mode) pairs; the Tuner itself is given no metric (a multi-objective sweep has
    none), and one given there is refused as Ray's own schedulers refuse a conflicting one.
    """

    def __init__(self, objectives: Sequence[tuple[str, str]], *, time_attr: str, max_t: int, grace_period: int = 1,
                 reduction_factor: float = 2.0) -> None:
        if not (0 < grace_period <= max_t and reduction_factor > 1 and len(objectives) > 1):
            raise ValueError(f"MultiObjectiveASHA needs 0 < grace_period ({grace_period}) <= max_t ({max_t}), "
                             f"reduction_factor > 1 ({reduction_factor}) and several objectives ({len(objectives)})")
        super().__init__()
        self.metrics = [m for m, _ in objectives]
        self.modes = [mode for _, mode in objectives]
        self.time_attr = time_attr
        self.max_t = max_t
        self.reduction_factor = reduction_factor
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
        #: Milestone → {trial id: objective values recorded there}, highest milestone first (as Ray keeps them).
        self.rungs: list[tuple[float, dict[str, list[float]]]] = [
            (grace_period * reduction_factor ** k, {}) for k in reversed(range(count))]
        self.stopped: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return metric is None and mode is None

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if self.time_attr not in result or any(m not in result for m in self.metrics):
            return TrialScheduler.CONTINUE
        if result[self.time_attr] >= self.max_t:
            return TrialScheduler.STOP
        action = self._at_rung(trial.trial_id, result)
        if action == TrialScheduler.STOP:
            self.stopped.add(trial.trial_id)
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if self.time_attr in result and all(m in result for m in self.metrics):
            self._at_rung(trial.trial_id, result)

    def _at_rung(self, trial_id: str, result: dict) -> str:
        """Decide at the highest milestone the trial has reached and not yet been recorded at, and record it."""
        epochs, point = result[self.time_attr], [float(result[m]) for m in self.metrics]
        for milestone, recorded in self.rungs:
            if epochs < milestone or trial_id in recorded:
                continue
            keep = continues(point, list(recorded.values()), self.modes, self.reduction_factor)
            if all(math.isfinite(x) for x in point):
                recorded[trial_id] = point
            return TrialScheduler.CONTINUE if keep else TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        rungs = ", ".join(f"{m:g}: {len(r)}" for m, r in reversed(self.rungs))
        return f"Using MultiObjectiveASHA: {len(self.stopped)} stopped; trials recorded per milestone {rungs}"
