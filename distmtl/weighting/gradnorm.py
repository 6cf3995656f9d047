"""GradNorm (Chen et al., 2018, "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask
Networks").

Learned task weights wₖ (start 1, kept summing to K) scale the losses. Each step GradNorm measures, at the last
shared weight matrix W, the norm Gₖ = wₖ·‖∇_W Lₖ‖ of each weighted task gradient, and moves the weights so that
Gₖ approaches mean(G)·rₖ^α, rₖ being task k's loss relative to its first step's, divided by the mean of those
ratios: a task that trains more slowly is pushed harder (``alpha`` sets how hard). The weights take one Adam step
(``weight_lr``) on Σₖ |Gₖ − target| with the targets held constant, then are renormalised to sum to K.

Under DDP the task gradients at W (K × |W|) and the losses are all-reduced before the norms are taken, so every
rank computes the union batch's norms and holds the same weights; the model's gradient of Σₖ λₖ·wₖ·Lₖ goes
through DDP. Extra cost per step: K gradients of the layers above W (one ``autograd.grad`` each) and that
all-reduce. The weights, the first losses and the Adam state are checkpointed.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from distmtl.config.plugins import Settings
from distmtl.config.schema import WeightingConfig
from distmtl.errors import ConfigError
from distmtl.weighting.base import WEIGHTINGS, ParameterSplit, Step, WeightAverage, Weighting
from distmtl.weighting.reach import split_parameters


class GradNormSettings(Settings):
    """The ``weighting`` keys of ``gradnorm``."""

    alpha: float = Field(1.5, ge=0, description="GradNorm's α: how strongly slower tasks are pushed (0: equal norms).")
    weight_lr: float = Field(0.025, gt=0, description="Learning rate of GradNorm's task weights (Adam).")


@WEIGHTINGS.register("gradnorm", settings=GradNormSettings)
class GradNorm(Weighting):
    """Learned task weights balancing the task gradients' norms at the last shared weight matrix."""

    optimised_with_model = False
    uses_split = True

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks)
        self.alpha = cfg.alpha
        self.task_weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("first_losses", torch.zeros(len(self.tasks), dtype=torch.float64))
        self.optimizer = torch.optim.Adam([self.task_weights], lr=cfg.weight_lr)
        self.static_row = torch.tensor([self.static[t] for t in self.tasks])
        self.average = WeightAverage(self.tasks)

    def check(self, model: nn.Module, image_shape: tuple[int, ...]) -> None:
        last_shared_matrix(split_parameters(model, self.tasks, image_shape, torch.device("cpu")))

    def backward(self, losses: dict[str, torch.Tensor], weights: dict[str, float], step: Step) -> torch.Tensor:
        layer = last_shared_matrix(step.split)
        grads = [torch.autograd.grad(losses[t], layer, retain_graph=True)[0].flatten().float() for t in self.tasks]
        norms, union = self._union_norms(torch.stack(grads), step.union_means(losses, self.tasks), step)
        if not self.first_losses.any():
            self.first_losses.copy_(union)
        scale = (self.static_row.to(layer.device) * self.task_weights.detach()).float()
        loss = sum(s * losses[t] for s, t in zip(scale, self.tasks))
        loss.backward()
        self.average.add(scale)
        self._update_weights(norms, union)
        return loss

    def _union_norms(self, grads: torch.Tensor, union: torch.Tensor, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        """‖∇_W Lₖ‖ of the union batch (count-weighted sum of the ranks' gradients over the global count)."""
        if step.comm.world_size > 1:
            counts = torch.stack([step.counts[t] for t in self.tasks]).float()
            payload = step.comm.all_reduce_sum(torch.cat([(grads * counts[:, None]).flatten(), counts]))
            grads = payload[: grads.numel()].view_as(grads) / payload[grads.numel():].clamp(min=1)[:, None]
        return grads.norm(dim=1).double(), union

    def _update_weights(self, norms: torch.Tensor, union: torch.Tensor) -> None:
        """One Adam step on Σₖ |wₖ·‖∇Lₖ‖ − mean(G)·rₖ^α| (targets constant), then Σ w = K."""
        weights = self.task_weights.detach().double()
        gnorms = weights * norms
        ratios = union / self.first_losses.clamp(min=1e-12)
        target = gnorms.mean() * (ratios / ratios.mean()) ** self.alpha
        self.optimizer.zero_grad(set_to_none=True)
        self.task_weights.grad = (torch.sign(gnorms - target) * norms).to(self.task_weights.dtype)
        self.optimizer.step()
        with torch.no_grad():
            self.task_weights.clamp_(min=1e-3)
            self.task_weights.mul_(len(self.tasks) / self.task_weights.sum())

    def epoch_metrics(self) -> dict[str, float]:
        return self.average.metrics()

    def get_extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def last_shared_matrix(split: ParameterSplit) -> nn.Parameter:
    """The last weight matrix (≥ 2 dimensions, in the model's parameter order) that several tasks' losses reach:
    GradNorm's W (hard sharing: the encoder's bottleneck layer; cross-stitch: the last unit's α)."""
    matrices = [p for p in split.shared if p.dim() >= 2]
    if not matrices:
        raise ConfigError("weighting.method gradnorm balances gradient norms at the last shared weight matrix, and "
                          "this architecture shares none (e.g. independent networks); choose another method")
    return matrices[-1]
