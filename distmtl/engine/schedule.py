"""The learning-rate schedule as a pure function of the global optimizer step.

A function of the step (rather than a stateful ``torch.optim.lr_scheduler``) survives what the
engine does to optimizers: Selective Sharing replaces the optimizer when branches merge, and a
resumed run rebuilds it from a checkpoint that already records the step.
"""

from __future__ import annotations

import math

import torch

from distmtl.config.schema import OptimConfig

BASE_LR = "base_lr"


class LearningRateSchedule:
    """Sets each parameter group's ``lr`` to its ``base_lr`` times the schedule's factor at a step."""

    def __init__(self, cfg: OptimConfig, steps_per_epoch: int) -> None:
        self.kind = cfg.schedule
        self.total = max(1, cfg.epochs * steps_per_epoch)
        self.warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

    def factor(self, step: int) -> float:
        """The multiplier of the base learning rate for optimizer step ``step`` (0-based)."""
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Set every group's learning rate for ``step``."""
        factor = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group[BASE_LR] * factor
