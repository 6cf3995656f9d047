"""Dynamic Weight Average (Liu et al., 2019).

w_k(t) = K·exp(r_k/T) / Σ_i exp(r_i/T), with r_k = L_k(t−1) / L_k(t−2) the ratio of task k's
epoch-mean unweighted training losses of the two previous epochs; w_k = 1 for the first two
epochs. Tasks whose loss falls more slowly get more weight; T → ∞ gives equal weights.
"""

from __future__ import annotations

import math
from typing import Any

from distmtl.config.schema import WeightingConfig
from distmtl.weighting.base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("dwa")
class DynamicWeightAverage(Weighting):
    """DWA factors (times the static weights) from the last two epochs' mean losses."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks)
        self.temperature = cfg.temperature
        self.history: list[dict[str, float]] = []

    def factors(self) -> dict[str, float]:
        if len(self.history) < 2:
            return {t: 1.0 for t in self.tasks}
        previous, before = self.history[-1], self.history[-2]
        ratios = {t: previous[t] / before[t] if before[t] > 0 else 1.0 for t in self.tasks}
        top = max(ratios.values())
        exps = {t: math.exp((r - top) / self.temperature) for t, r in ratios.items()}
        total = sum(exps.values())
        return {t: len(self.tasks) * e / total for t, e in exps.items()}

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        self.history = (self.history + [dict(mean_losses)])[-2:]

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state.get("history", [])]
