"""FAMO (Liu et al., 2023, "FAMO: Fast Adaptive Multitask Optimization").

FAMO keeps task logits ξ (weights z = softmax(ξ)) and minimises Σₖ zₖ·log Lₖ: the model's gradient is
Σₖ cₖ·∇Lₖ with cₖ = zₖ / (Lₖ · Σᵢ zᵢ/Lᵢ), so every task's loss falls at about the same *rate*. After the
optimizer step the same batch is evaluated again (one extra forward pass) and ξ takes one Adam step (``weight_lr``,
weight decay ``gamma``) along the softmax's Jacobian applied to each task's log-loss decrease, so a task whose loss
fell less gets more weight. No gradient of the model is stored or compared: the cost is that forward pass.

Under DDP the Lₖ in the coefficients and in the logits' update are the union batch's means (2·K numbers
all-reduced each time), so every rank holds the same ξ and the model's gradient, averaged by DDP, is the union
batch's. The static λₖ multiply the coefficients; the coefficients are scaled to sum to K, like ``fixed``'s
weights (Adam does not see the scale). ξ, the last losses and the Adam state are checkpointed.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from distmtl.config.plugins import Settings
from distmtl.config.schema import WeightingConfig
from distmtl.weighting.base import WEIGHTINGS, Step, WeightAverage, Weighting

#: Added to every loss inside a logarithm or a division (FAMO's minimum losses are taken as 0).
EPSILON = 1e-8


class FAMOSettings(Settings):
    """The ``weighting`` keys of ``famo``."""

    weight_lr: float = Field(0.025, gt=0, description="Learning rate of FAMO's task logits (Adam).")
    gamma: float = Field(0.001, ge=0, description="Weight decay γ of FAMO's task logits.")


@WEIGHTINGS.register("famo", settings=FAMOSettings)
class FAMO(Weighting):
    """Task logits ξ with their own Adam optimizer; coefficients from the union batch's losses."""

    optimised_with_model = False

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks)
        self.logits = nn.Parameter(torch.zeros(len(self.tasks)))
        self.register_buffer("last_losses", torch.zeros(len(self.tasks), dtype=torch.float64))
        self.optimizer = torch.optim.Adam([self.logits], lr=cfg.weight_lr, weight_decay=cfg.gamma)
        self.static_row = torch.tensor([self.static[t] for t in self.tasks], dtype=torch.float64)
        self.average = WeightAverage(self.tasks)

    def coefficients(self, losses: torch.Tensor) -> torch.Tensor:
        """cₖ = zₖ / (Lₖ · Σᵢ zᵢ/Lᵢ) for the union losses ``losses``, times λₖ, scaled to sum to K (before λ)."""
        z = torch.softmax(self.logits.detach().double(), dim=0)
        scaled = z / (losses + EPSILON)
        return len(self.tasks) * scaled / scaled.sum() * self.static_row.to(losses.device)

    def backward(self, losses: dict[str, torch.Tensor], weights: dict[str, float], step: Step) -> torch.Tensor:
        union = step.union_means(losses, self.tasks)
        self.last_losses.copy_(union)
        coefficients = self.coefficients(union)
        self.average.add(coefficients)
        loss = sum(c * losses[t] for c, t in zip(coefficients.float(), self.tasks))
        loss.backward()
        return loss

    def after_step(self, step: Step) -> None:
        """One Adam step of ξ along the softmax Jacobian times each task's log-loss decrease on this batch."""
        with torch.no_grad():
            after = step.union_means(step.losses_again(), self.tasks)
        decrease = (self.last_losses + EPSILON).log() - (after + EPSILON).log()
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(torch.softmax(self.logits, dim=0), self.logits,
                                          grad_outputs=decrease.to(self.logits.dtype))
        self.optimizer.zero_grad(set_to_none=True)
        self.logits.grad = grad
        self.optimizer.step()

    def epoch_metrics(self) -> dict[str, float]:
        return self.average.metrics()

    def get_extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
