"""The weighting contract and registry (the strategies register themselves in their modules).

A weighting is an ``nn.Module`` so that it moves with the model (``.to(device)``): a learned
strategy's parameters live on the training device, and its state travels in checkpoints through
the usual ``state_dict``. Every strategy multiplies the static per-task weights of the config (λ;
1 where unset) by its own factors. Epoch-level strategies (``fixed``, ``dwa``) change factors only
at epoch boundaries, from epoch-mean *unweighted* training losses that the engine has already
all-reduced across ranks, so every rank holds the same weights without communication.
Strategies with learnable parameters (``uncertainty``) register them as module parameters; the
engine optimises them and averages their gradients across ranks every step.
"""

from __future__ import annotations

import torch
from torch import nn

from distmtl.config.schema import WeightingConfig
from distmtl.registry import Registry

WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting method", "weighting.method")


@WEIGHTINGS.register("fixed")
class Weighting(nn.Module):
    """Base strategy: static weights only (``fixed``)."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__()
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

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Record this epoch's mean unweighted training loss per task (identical on all ranks)."""


def build_weighting(cfg: WeightingConfig, tasks: list[str]) -> Weighting:
    """Instantiate the configured strategy."""
    return WEIGHTINGS.get(cfg.method)(cfg, tasks)
