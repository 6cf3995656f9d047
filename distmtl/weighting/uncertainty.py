"""Uncertainty weighting (Kendall, Gal & Cipolla, 2018): learned homoscedastic task uncertainty.

Each task k has a learned s_k = log σ_k²; the combined loss is Σ_k λ_k·(½·exp(−s_k)·L_k + ½·s_k).
Tasks with noisier losses learn a larger σ_k and so a smaller weight ½·exp(−s_k); the ½·s_k term
keeps σ_k from growing without bound. The reported weight of task k is λ_k·½·exp(−s_k).
"""

from __future__ import annotations

import math

import torch

from distmtl.config.schema import WeightingConfig
from distmtl.weighting.base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("uncertainty")
class UncertaintyWeighting(Weighting):
    """Learned log-variances, one per task, initialised to 0 (σ² = 1)."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks)
        self.log_vars = torch.nn.Parameter(torch.zeros(len(self.tasks)))

    def factors(self) -> dict[str, float]:
        return {t: 0.5 * math.exp(-v) for t, v in zip(self.tasks, self.log_vars.detach().tolist())}

    def combine(self, losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
        return sum(self.static[t] * 0.5 * (torch.exp(-self.log_vars[i]) * losses[t] + self.log_vars[i])
                   for i, t in enumerate(self.tasks))
