"""Independent networks: one encoder and head per task, nothing shared (the single-task baseline)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from distmtl.config.schema import ModelConfig
from distmtl.models.base import ARCHITECTURES, MultiTaskModel
from distmtl.models.encoders import ENCODERS
from distmtl.tasks.base import Task


@ARCHITECTURES.register("independent")
class Independent(MultiTaskModel):
    """``{task: head_task(encoder_task(x))}``; about K times the parameters of one encoder."""

    def __init__(self, cfg: ModelConfig, tasks: dict[str, Task], in_channels: int) -> None:
        super().__init__()
        self.task_names = list(tasks)
        self.encoders = nn.ModuleDict({t: ENCODERS.get(cfg.encoder)(cfg, in_channels) for t in tasks})
        self.heads = nn.ModuleDict({t: task.head(self.encoders[t].shape) for t, task in tasks.items()})

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """There is no shared point: the task representations side by side."""
        return torch.cat([encoder(x).vector for encoder in self.encoders.values()], dim=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {t: self.heads[t](self.encoders[t](x)) for t in self.task_names}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from self.encoders[task].parameters()
        yield from self.heads[task].parameters()
