"""Random Loss Weighting (Lin et al., 2022, "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning").

Every step draws z ~ N(0, I_K) and weighs task k's loss by K·softmax(z)ₖ (times its static λₖ): weights that
sum to K like ``fixed``'s, a new random point of the simplex each step. The draw comes from a generator seeded
with the run seed and the global step, so every DDP rank uses the same weights and a resumed run draws what the
uninterrupted one would have. ``weight/<task>`` reports the epoch mean.
"""

from __future__ import annotations

import torch

from distmtl.config.schema import WeightingConfig
from distmtl.weighting.base import WEIGHTINGS, Step, WeightAverage, Weighting


@WEIGHTINGS.register("rlw")
class RandomLossWeighting(Weighting):
    """Per-step weights K·softmax(z), z standard normal, the same on every rank."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks)
        self.average = WeightAverage(self.tasks)

    def step_weights(self, step: Step) -> torch.Tensor:
        """This step's factors (K, on the CPU)."""
        draw = torch.randn(len(self.tasks), generator=torch.Generator().manual_seed(step.generator_seed()))
        return len(self.tasks) * torch.softmax(draw, dim=0)

    def backward(self, losses: dict[str, torch.Tensor], weights: dict[str, float], step: Step) -> torch.Tensor:
        factors = self.step_weights(step)
        drawn = {t: weights[t] * f for t, f in zip(self.tasks, factors.tolist())}
        self.average.add(torch.tensor([drawn[t] for t in self.tasks]))
        return super().backward(losses, drawn, step)

    def epoch_metrics(self) -> dict[str, float]:
        return self.average.metrics()
