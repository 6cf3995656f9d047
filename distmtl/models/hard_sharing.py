"""Hard parameter sharing: one encoder shared by all tasks, one output head per task."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from distmtl.config.schema import ModelConfig
from distmtl.models.base import ARCHITECTURES, MultiTaskModel
from distmtl.models.encoders import ENCODERS
from distmtl.tasks.base import Task


@ARCHITECTURES.register("hard_sharing", default=True)
class HardSharing(MultiTaskModel):
    """encoder → shared bottleneck → ``{task: head(bottleneck)}``."""

    def __init__(self, cfg: ModelConfig, tasks: dict[str, Task], in_channels: int) -> None:
        super().__init__()
        self.task_names = list(tasks)
        self.encoder = ENCODERS.get(cfg.encoder)(cfg, in_channels)
        self.heads = nn.ModuleDict({name: task.head(self.encoder.shape) for name, task in tasks.items()})

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).vector

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder(x)
        return {name: head(features) for name, head in self.heads.items()}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.heads[task].parameters()
