"""Multi-class classification: cross-entropy loss, accuracy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from distmtl.tasks.base import Task, register_kind


@register_kind("classification")
class ClassificationTask(Task):
    """Logits over ``size`` classes; integer class targets."""

    metric_modes = {"accuracy": "max"}

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, reduction="none")

    def metric_state(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        correct = ((output.argmax(dim=1) == target) & mask).sum()
        return torch.stack([correct, mask.sum()]).double()

    def metrics(self, state: torch.Tensor) -> dict[str, float]:
        correct, count = state.tolist()
        return {"accuracy": correct / count if count else math.nan}
