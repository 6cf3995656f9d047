"""Per-epoch sums of losses and metric states, kept on the device and all-reduced once per epoch."""

from __future__ import annotations

import torch

from distmtl.engine.context import DistContext
from distmtl.tasks.base import Task


class EpochAccumulator:
    """Adds, per task, the masked loss sum, the sample count and the metric state of each batch."""

    def __init__(self, tasks: dict[str, Task], device: torch.device) -> None:
        self.tasks = tasks
        self.losses = torch.zeros(len(tasks), 2, dtype=torch.float64, device=device)
        self.states = {name: torch.zeros(t.metric_state_size(), dtype=torch.float64, device=device)
                       for name, t in tasks.items()}

    def add(
        self,
        outputs: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        loss_terms: dict[str, tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        """Accumulate one batch (no host synchronisation)."""
        for i, (name, task) in enumerate(self.tasks.items()):
            total, count = loss_terms[name]
            self.losses[i, 0] += total.detach().double()
            self.losses[i, 1] += count.double()
            self.states[name] += task.metric_state(outputs[name].detach().float(), targets[name], masks[name])

    def reduce(self, ctx: DistContext) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """All-reduce everything in one collective; return (mean loss per task, metrics per task)."""
        flat = ctx.all_reduce_sum(torch.cat([self.losses.flatten(), *self.states.values()]))
        flat = flat.cpu()
        losses = flat[: self.losses.numel()].view(-1, 2)
        mean_losses = {
            name: (losses[i, 0] / losses[i, 1]).item() if losses[i, 1] > 0 else float("nan")
            for i, name in enumerate(self.tasks)
        }
        metrics, offset = {}, self.losses.numel()
        for name, task in self.tasks.items():
            size = task.metric_state_size()
            metrics[name] = task.metrics(flat[offset : offset + size])
            offset += size
        return mean_losses, metrics
