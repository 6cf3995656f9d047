"""Multi-class classification: cross-entropy loss; accuracy and balanced accuracy (mean per-class recall)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from distmtl.tasks.base import Task, register_kind


@register_kind("classification")
class ClassificationTask(Task):
    """Logits over ``size`` classes; integer class targets."""

    metric_modes = {"accuracy": "max", "balanced_accuracy": "max"}
    headline = "accuracy"
    record_kind = "confusion_matrix"

    def metric_state_size(self) -> int:
        return 2 * self.size

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, reduction="none")

    def prediction_record(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        """The confusion matrix (rows: true class, columns: predicted class)."""
        index = targets.long() * self.size + outputs.argmax(dim=1)
        matrix = torch.bincount(index, minlength=self.size * self.size).view(self.size, self.size)
        return {"task": self.name, "matrix": matrix.tolist()}

    def metric_state(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per class: correctly classified samples, then samples."""
        labels = torch.where(mask, target, torch.zeros_like(target))
        weight = mask.double()
        correct = torch.zeros(self.size, dtype=torch.float64, device=output.device)
        count = torch.zeros(self.size, dtype=torch.float64, device=output.device)
        correct.index_add_(0, labels, weight * (output.argmax(dim=1) == target).double())
        count.index_add_(0, labels, weight)
        return torch.cat([correct, count])

    def metrics(self, state: torch.Tensor) -> dict[str, float]:
        correct, count = state.view(2, self.size)
        if count.sum() == 0:
            return {"accuracy": math.nan, "balanced_accuracy": math.nan}
        seen = count > 0
        return {"accuracy": (correct.sum() / count.sum()).item(),
                "balanced_accuracy": (correct[seen] / count[seen]).mean().item()}
