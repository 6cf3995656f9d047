"""Auxiliary transfer: the target tasks' encoder fuses, after every stage, the feature maps of frozen
encoders taken from earlier runs (e.g. a detection-only and a classification-only run), through a
cross-stitch row: x̃_own[c] = α[c, own]·x_own[c] + Σ_aux α[c, aux]·x_aux[c].

``model.aux_checkpoints`` names the earlier runs' checkpoint directories; each must hold a
``hard_sharing`` model whose encoder has this run's stage widths. The assembly layer
(:mod:`distmtl.engine.assembly`) loads their best-epoch weights, freezes them (eval mode, no
gradients) and hands them to this architecture as ``frozen_encoders``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from pydantic import Field
from torch import nn

from distmtl.config.plugins import Settings
from distmtl.config.schema import ModelConfig
from distmtl.errors import ConfigError
from distmtl.features import Features
from distmtl.models.base import ARCHITECTURES, MultiTaskModel
from distmtl.models.cross_stitch import CrossStitchUnits, stitch_optimizer_groups, stitch_units
from distmtl.models.encoders import ENCODERS, Encoder
from distmtl.tasks.base import Task


class AuxTransferSettings(Settings):
    """The ``model`` keys of ``aux_transfer``: the earlier runs whose encoders are fused, and the fusing units."""

    aux_checkpoints: list[str] = Field(
        default_factory=list, description="Checkpoint directories of earlier runs whose encoders are fused.")
    cross_stitch: CrossStitchUnits = Field(default_factory=CrossStitchUnits)


@ARCHITECTURES.register("aux_transfer", settings=AuxTransferSettings)
class AuxTransfer(MultiTaskModel):
    """Own trainable encoder + frozen auxiliary encoders fused stage by stage; heads on the fused features."""

    def __init__(self, cfg: ModelConfig, tasks: dict[str, Task], in_channels: int,
                 frozen_encoders: Sequence[Encoder] = ()) -> None:
        super().__init__()
        if not frozen_encoders:
            raise ConfigError("model.aux_checkpoints: aux_transfer needs at least one checkpoint directory "
                              "of an earlier run")
        self.task_names = list(tasks)
        self.encoder = ENCODERS.get(cfg.encoder)(cfg, in_channels)
        self.aux = nn.ModuleList(frozen_encoders)
        for directory, aux in zip(cfg.aux_checkpoints, self.aux):
            if aux.stage_channels != self.encoder.stage_channels:
                raise ConfigError(f"model.aux_checkpoints: {directory} has stage widths {aux.stage_channels}, "
                                  f"this model {self.encoder.stage_channels}; use the same encoder and channels")
        self.units = stitch_units(cfg.cross_stitch, 1 + len(self.aux), self.encoder.stage_channels)
        self.lr_multiplier = cfg.cross_stitch.lr_multiplier
        self.heads = nn.ModuleDict({t: task.head(self.encoder.shape) for t, task in tasks.items()})

    def train(self, mode: bool = True) -> AuxTransfer:
        super().train(mode)
        self.aux.eval()  # frozen: batch-norm statistics stay as trained
        return self

    def encode(self, x: torch.Tensor) -> Features:
        size = tuple(x.shape[-2:])
        own, aux = x, [x] * len(self.aux)
        maps = []
        for s, unit in enumerate(self.units):
            own = self.encoder.stages[s](own)
            with torch.no_grad():
                aux = [encoder.stages[s](m) for encoder, m in zip(self.aux, aux)]
            own = unit([own, *aux])[0]
            maps.append(own)
        return Features(self.encoder.bottleneck(own), maps, size)  # type: ignore[arg-type]

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x).vector

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encode(x)
        return {t: self.heads[t](features) for t in self.task_names}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.encoder.parameters()
        yield from self.units.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.heads[task].parameters()

    def parameter_counts(self) -> dict[str, int]:
        counts = super().parameter_counts()
        counts["frozen"] = sum(p.numel() for p in self.aux.parameters())
        return counts

    def optimizer_groups(self) -> list[dict]:
        return stitch_optimizer_groups(self, self.units, self.lr_multiplier)
