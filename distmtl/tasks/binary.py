"""Binary tasks (e.g. one-vs-all): BCE with logits; accuracy, balanced accuracy and ROC AUC.

One-vs-all tasks are imbalanced ("always no" scores 90% accuracy on ten classes), which is why
balanced accuracy and AUC are reported beside accuracy. AUC is computed from per-class
histograms of predicted probabilities (``AUC_BINS`` bins), which add across batches and ranks;
with 1000 bins it agrees with the exact value to about 1e-3.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from distmtl.tasks.base import Task, register_kind

AUC_BINS = 1000


@register_kind("binary")
class BinaryTask(Task):
    """One logit per sample; targets 0/1."""

    metric_modes = {"accuracy": "max", "balanced_accuracy": "max", "auc": "max"}
    headline = "balanced_accuracy"

    def metric_state_size(self) -> int:
        return 4 + 2 * AUC_BINS

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output.view(-1), target.float(), reduction="none")

    def metric_state(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        prob = torch.sigmoid(output.view(-1).double())
        positive, negative = (target == 1) & mask, (target != 1) & mask
        predicted = prob >= 0.5
        bins = (prob * AUC_BINS).long().clamp_(max=AUC_BINS - 1)
        histograms = torch.zeros(2, AUC_BINS, dtype=torch.float64, device=output.device)
        histograms[0].index_add_(0, bins, negative.double())
        histograms[1].index_add_(0, bins, positive.double())
        counts = torch.stack([(predicted & positive).sum(), positive.sum(),
                              (~predicted & negative).sum(), negative.sum()])
        return torch.cat([counts.double(), histograms.flatten()])

    def metrics(self, state: torch.Tensor) -> dict[str, float]:
        true_pos, pos, true_neg, neg = state[:4].tolist()
        if pos + neg == 0:
            return {name: math.nan for name in self.metric_modes}
        recalls = [r for r in (true_pos / pos if pos else None, true_neg / neg if neg else None) if r is not None]
        neg_hist, pos_hist = state[4:].view(2, AUC_BINS)
        if pos and neg:
            # P(score of a positive > score of a negative), ties (same bin) counted half.
            negatives_below = torch.cumsum(neg_hist, 0) - neg_hist
            auc = ((pos_hist * (negatives_below + 0.5 * neg_hist)).sum() / (pos * neg)).item()
        else:
            auc = math.nan
        return {"accuracy": (true_pos + true_neg) / (pos + neg), "balanced_accuracy": sum(recalls) / len(recalls),
                "auc": auc}
