"""Label-reuse architectures for a fine/coarse pair of classification tasks.

One task's predicted class distribution (softmax of its head's output) is concatenated to the
other task's features and feeds that task's head, so the receiving task can condition on the
other's prediction (gradients flow through both). Four variants, with ``independent`` and
``hard_sharing`` the six-architecture comparison:

- ``reuse_coarse``: independent branches; the coarse prediction feeds the fine head;
- ``reuse_fine``: independent branches; the fine prediction feeds the coarse head;
- ``shared_reuse_coarse`` / ``shared_reuse_fine``: the same on one shared encoder.

Other tasks in the config get plain heads (on their own branch, or on the shared encoder).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pydantic import Field
from torch import nn

from distmtl.config.plugins import Settings
from distmtl.config.schema import ModelConfig
from distmtl.errors import ConfigError
from distmtl.features import Features
from distmtl.models.base import ARCHITECTURES, MultiTaskModel
from distmtl.models.encoders import ENCODERS
from distmtl.tasks.base import Task


class LabelReuseSettings(Settings):
    """The ``model`` keys of the label-reuse architectures: which classification tasks hold the fine and the coarse
    labels."""

    fine_task: str = Field("fine", description="The task with the finer labels.")
    coarse_task: str = Field("coarse", description="The task with the coarser labels.")


class LabelReuse(MultiTaskModel):
    """``source`` task's softmax output, concatenated to ``target`` task's features, feeds ``target``'s head."""

    def __init__(self, cfg: ModelConfig, tasks: dict[str, Task], in_channels: int, *, shared: bool, reuse: str) -> None:
        super().__init__()
        for role in ("fine_task", "coarse_task"):
            name = getattr(cfg, role)
            if name not in tasks or tasks[name].kind != "classification":
                classification = [t for t, k in tasks.items() if k.kind == "classification"]
                raise ConfigError(f"model.{role}: '{name}' must be one of the classification tasks "
                                  f"{classification} for {cfg.architecture}")
        self.source = cfg.coarse_task if reuse == "coarse" else cfg.fine_task
        self.target = cfg.fine_task if reuse == "coarse" else cfg.coarse_task
        self.task_names = list(tasks)
        self.shared = shared
        make = lambda: ENCODERS.get(cfg.encoder)(cfg, in_channels)  # noqa: E731
        self.encoders = nn.ModuleDict({"shared": make()} if shared else {t: make() for t in tasks})
        shape = next(iter(self.encoders.values())).shape
        self.heads = nn.ModuleDict({
            t: task.head(shape.widened(tasks[self.source].size) if t == self.target else shape)
            for t, task in tasks.items()
        })

    def _encode(self, x: torch.Tensor) -> dict[str, Features]:
        if self.shared:
            z = self.encoders["shared"](x)
            return {t: z for t in self.task_names}
        return {t: self.encoders[t](x) for t in self.task_names}

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return self.encoders["shared"](x).vector
        return torch.cat([f.vector for f in self._encode(x).values()], dim=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self._encode(x)
        out = {t: self.heads[t](features[t]) for t in self.task_names if t != self.target}
        reused = torch.softmax(out[self.source], dim=1)
        own = features[self.target]
        out[self.target] = self.heads[self.target](own.with_vector(torch.cat([own.vector, reused], dim=1)))
        return {t: out[t] for t in self.task_names}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoders["shared"].parameters() if self.shared else iter(())

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        if not self.shared:
            yield from self.encoders[task].parameters()
        yield from self.heads[task].parameters()


for _name, _shared, _reuse in (("reuse_coarse", False, "coarse"), ("reuse_fine", False, "fine"),
                               ("shared_reuse_coarse", True, "coarse"), ("shared_reuse_fine", True, "fine")):
    ARCHITECTURES.register(_name, settings=LabelReuseSettings)(
        lambda cfg, tasks, in_channels, _s=_shared, _r=_reuse: LabelReuse(cfg, tasks, in_channels, shared=_s, reuse=_r))
