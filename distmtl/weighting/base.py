"""The weighting contract and registry.

Every strategy multiplies the static per-task weights of the config (λ; 1 where unset) by its
own factors. Epoch-level strategies (``fixed``, ``dwa``) change factors only at epoch
boundaries, from epoch-mean *unweighted* training losses that the engine has already
all-reduced across ranks, so every rank holds the same weights without communication.
Strategies with learnable parameters (``uncertainty``) expose them through ``parameters()``;
the engine optimises them and averages their gradients across ranks every step.
"""

from __future__ import annotations

from typing import Any

import torch

from distmtl.config.schema import WeightingConfig
from distmtl.registry import Registry

WEIGHTINGS: Registry = Registry("weighting method", "weighting.method")


class Weighting:
    """Base strategy: static weights only (``fixed``)."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        self.tasks = list(tasks)
        self.static = {t: cfg.weights.get(t, 1.0) for t in self.tasks}

    def factors(self) -> dict[str, float]:
        """The strategy's dynamic factor per task for the current epoch."""
        return {t: 1.0 for t in self.tasks}

    def weights(self) -> dict[str, float]:
        """Weight per task for the current epoch: static weight × dynamic factor."""
        factors = self.factors()
        return {t: self.static[t] * factors[t] for t in self.tasks}

    def combine(self, losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
        """One scalar from this batch's per-task losses, given this epoch's ``weights()``."""
        return sum(weights[t] * loss for t, loss in losses.items())

    def parameters(self) -> list[torch.nn.Parameter]:
        """Learnable parameters of the strategy (none for epoch-level strategies)."""
        return []

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Record this epoch's mean unweighted training loss per task (identical on all ranks)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


WEIGHTINGS.register("fixed")(Weighting)


def build_weighting(cfg: WeightingConfig, tasks: list[str]) -> Weighting:
    """Instantiate the configured strategy."""
    import distmtl.weighting.dwa  # noqa: F401  (registers itself)
    import distmtl.weighting.uncertainty  # noqa: F401

    return WEIGHTINGS.get(cfg.method)(cfg, tasks)
