"""Dynamic Weight Average (Liu et al., 2019).

w_k(t) = K·exp(r_k/T) / Σ_i exp(r_i/T), with r_k = L_k(t−1) / L_k(t−2) the ratio of task k's
epoch-mean unweighted training losses of the two previous epochs; w_k = 1 for the first two
epochs. Tasks whose loss falls more slowly get more weight; T → ∞ gives equal weights.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from distmtl.config.plugins import Settings
from distmtl.config.schema import WeightingConfig
from distmtl.weighting.base import WEIGHTINGS, Weighting


class DWASettings(Settings):
    """The ``weighting`` keys of ``dwa``."""

    temperature: float = Field(2.0, gt=0, description="DWA temperature T.")


@WEIGHTINGS.register("dwa", settings=DWASettings)
class DynamicWeightAverage(Weighting):
    """DWA factors (times the static weights) from the last two epochs' mean losses.

    ``history`` (a buffer, so it is checkpointed) holds the mean losses of the two latest epochs,
    older first; ``epochs_seen`` counts the epochs recorded so far.
    """

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks)
        self.temperature = cfg.temperature
        self.register_buffer("history", torch.zeros(2, len(self.tasks), dtype=torch.float64))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def factors(self) -> dict[str, float]:
        if int(self.epochs_seen) < 2:
            return {t: 1.0 for t in self.tasks}
        before, previous = self.history.tolist()
        ratios = [p / b if b > 0 else 1.0 for p, b in zip(previous, before)]
        top = max(ratios)
        exps = [math.exp((r - top) / self.temperature) for r in ratios]
        total = sum(exps)
        return {t: len(self.tasks) * e / total for t, e in zip(self.tasks, exps)}

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        latest = torch.tensor([mean_losses[t] for t in self.tasks], dtype=torch.float64, device=self.history.device)
        self.history.copy_(torch.stack([self.history[1], latest]))
        self.epochs_seen += 1
