"""Vector regression (e.g. coordinates in a similarity space): MSE loss; MSE, MAE, MED and R².

R² is the uniform average over output dimensions of 1 − SS_res/SS_tot (scikit-learn's
``multioutput="uniform_average"``); MED is the mean Euclidean distance between prediction and
target vectors.
"""

from __future__ import annotations

import math

import torch

from distmtl.tasks.base import Task, register_kind


@register_kind("regression")
class RegressionTask(Task):
    """A ``size``-dimensional real-valued output."""

    metric_modes = {"mse": "min", "mae": "min", "med": "min", "r2": "max"}
    headline = "mae"
    record_kind = "predicted_vs_true"
    #: Points kept per figure (the first ones of the split): enough to see the fit, small enough to store.
    max_points = 1000

    def prediction_record(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        """Predicted and true values per output dimension (at most :attr:`max_points` samples)."""
        return {"task": self.name, "predicted": outputs[: self.max_points].float().tolist(),
                "true": targets[: self.max_points].float().tolist()}

    def metric_state_size(self) -> int:
        return 2 + 4 * self.size

    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (output - target).pow(2).mean(dim=1)

    def metric_state(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.double().unsqueeze(1)
        y = target.double() * m
        residual = (output.double() - target.double()) * m
        return torch.cat(
            [
                m.sum().view(1),
                residual.norm(dim=1).sum().view(1),
                residual.abs().sum(dim=0),
                residual.pow(2).sum(dim=0),
                y.sum(dim=0),
                y.pow(2).sum(dim=0),
            ]
        )

    def metrics(self, state: torch.Tensor) -> dict[str, float]:
        n = state[0].item()
        if n == 0:
            return {name: math.nan for name in self.metric_modes}
        d = self.size
        abs_err, sq_err, y_sum, y_sq = state[2:].view(4, d)
        ss_tot = y_sq - y_sum.pow(2) / n
        r2 = torch.where(ss_tot > 0, 1.0 - sq_err / ss_tot, torch.zeros_like(ss_tot))
        return {
            "mse": (sq_err.sum() / (n * d)).item(),
            "mae": (abs_err.sum() / (n * d)).item(),
            "med": state[1].item() / n,
            "r2": r2.mean().item(),
        }
