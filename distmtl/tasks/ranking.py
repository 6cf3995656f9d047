"""Ranking: one score per image, trained on pairs. For every pair (i, j) of samples in a batch that carry
targets and differ in them, a margin ranking loss asks score_i > score_j + margin when target_i >
target_j. Pair accuracy is the share of such pairs ordered correctly. (Under DDP, pairs are formed
within each rank's batch.)"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from distmtl.tasks.base import Task, register_kind

MARGIN = 0.1


def _pairs(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
    score, value = output.view(-1).float(), target.view(-1).float()
    i, j = torch.triu_indices(len(score), len(score), offset=1, device=score.device)
    sign = torch.sign(value[i] - value[j])
    valid = (mask[i] & mask[j] & (sign != 0)).float()
    return score[i], score[j], sign, valid


@register_kind("ranking")
class RankingTask(Task):
    """A scalar score per image whose order should follow the target's."""

    metric_modes = {"pair_accuracy": "max"}
    headline = "pair_accuracy"

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("ranking losses are defined on pairs: see masked_loss_terms")

    def masked_loss_terms(self, output, target, mask):
        """(sum of pair losses, number of valid pairs) in this batch."""
        first, second, sign, valid = _pairs(output, target, mask)
        losses = F.margin_ranking_loss(first, second, sign, margin=MARGIN, reduction="none")
        return (losses * valid).sum(), valid.sum()

    def metric_state(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        first, second, sign, valid = _pairs(output, target, mask)
        correct = (torch.sign(first - second) == sign).float() * valid
        return torch.stack([correct.sum(), valid.sum()]).double()

    def metrics(self, state: torch.Tensor) -> dict[str, float]:
        correct, pairs = state.tolist()
        return {"pair_accuracy": correct / pairs if pairs else math.nan}
