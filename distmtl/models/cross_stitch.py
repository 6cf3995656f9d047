"""Cross-stitch networks (Misra et al., 2016): one encoder branch per task, and after every encoder
stage a cross-stitch unit that mixes the branches' feature maps with a learned K×K matrix per
channel: x̃_k[c] = Σ_j α[c, k, j]·x_j[c]. With α = identity the branches are independent networks.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pydantic import Field
from torch import nn

from distmtl.config.plugins import Settings
from distmtl.config.schema import ModelConfig
from distmtl.features import Features
from distmtl.models.base import ARCHITECTURES, MultiTaskModel
from distmtl.models.encoders import ENCODERS
from distmtl.tasks.base import Task


class CrossStitchUnits(Settings):
    """Cross-stitch units: initial same-task weight α, cross-task weight β (default (1 − α)/(K − 1), so each unit
    starts as a convex mix), and the units' learning-rate multiplier."""

    alpha_same: float = Field(0.9, ge=0)
    alpha_cross: float | None = Field(None, ge=0)
    lr_multiplier: float = Field(10.0, gt=0)


class CrossStitchSettings(Settings):
    """The ``model`` keys of ``cross_stitch``."""

    cross_stitch: CrossStitchUnits = Field(default_factory=CrossStitchUnits)


class CrossStitchUnit(nn.Module):
    """α of shape (channels, K, K), initialised to ``same`` on the diagonal and ``cross`` elsewhere."""

    def __init__(self, tasks: int, channels: int, same: float, cross: float) -> None:
        super().__init__()
        init = torch.full((tasks, tasks), cross)
        init.fill_diagonal_(same)
        self.alpha = nn.Parameter(init.expand(channels, tasks, tasks).clone())

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        mixed = torch.einsum("ckj,jbchw->kbchw", self.alpha, torch.stack(maps))
        return list(mixed.unbind(0))


def stitch_units(cfg: CrossStitchUnits, tasks: int, channels: list[int]) -> nn.ModuleList:
    """One unit per stage; β defaults to (1 − α)/(K − 1) so every unit starts as a convex mix."""
    cross = cfg.alpha_cross if cfg.alpha_cross is not None else (1.0 - cfg.alpha_same) / max(tasks - 1, 1)
    return nn.ModuleList(CrossStitchUnit(tasks, c, cfg.alpha_same, cross) for c in channels)


def stitch_optimizer_groups(model: nn.Module, units: nn.ModuleList, lr_multiplier: float) -> list[dict]:
    """The trainable parameters, and the units' with their own learning-rate multiplier and no weight decay."""
    in_units = {id(p) for p in units.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in in_units]
    return [{"params": rest}, {"params": list(units.parameters()), "lr_scale": lr_multiplier, "weight_decay": 0.0}]


@ARCHITECTURES.register("cross_stitch", settings=CrossStitchSettings)
class CrossStitch(MultiTaskModel):
    """K encoder branches stitched after every stage; each task's head reads its own branch."""

    def __init__(self, cfg: ModelConfig, tasks: dict[str, Task], in_channels: int) -> None:
        super().__init__()
        self.task_names = list(tasks)
        k = len(tasks)
        self.branches = nn.ModuleDict({t: ENCODERS.get(cfg.encoder)(cfg, in_channels) for t in tasks})
        self.units = stitch_units(cfg.cross_stitch, k, self.branches[self.task_names[0]].stage_channels)
        self.lr_multiplier = cfg.cross_stitch.lr_multiplier
        self.heads = nn.ModuleDict({t: task.head(self.branches[t].shape) for t, task in tasks.items()})

    def encode(self, x: torch.Tensor) -> dict[str, Features]:
        """Every branch's features, stage by stage with the cross-stitch mixing in between."""
        size = tuple(x.shape[-2:])
        branches = [self.branches[t] for t in self.task_names]
        current = [x] * len(branches)
        maps: list[list[torch.Tensor]] = [[] for _ in branches]
        for s, unit in enumerate(self.units):
            current = unit([b.stages[s](m) for b, m in zip(branches, current)])
            for k, m in enumerate(current):
                maps[k].append(m)
        return {t: Features(b.bottleneck(current[k]), maps[k], size)
                for k, (t, b) in enumerate(zip(self.task_names, branches))}

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([f.vector for f in self.encode(x).values()], dim=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encode(x)
        return {t: self.heads[t](features[t]) for t in self.task_names}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.units.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from self.branches[task].parameters()
        yield from self.heads[task].parameters()

    def optimizer_groups(self) -> list[dict]:
        return stitch_optimizer_groups(self, self.units, self.lr_multiplier)

    def alphas(self) -> list[torch.Tensor]:
        """Each unit's K×K mixing matrix averaged over channels (rows: receiving task)."""
        return [unit.alpha.detach().mean(dim=0).cpu() for unit in self.units]

    def extra_metrics(self) -> dict[str, float]:
        metrics = {}
        for s, alpha in enumerate(self.alphas()):
            off = ~torch.eye(len(alpha), dtype=torch.bool)
            metrics[f"cross_stitch/stage{s}/same"] = alpha.diagonal().mean().item()
            metrics[f"cross_stitch/stage{s}/cross"] = alpha[off].mean().item() if off.any() else 0.0
        return metrics

    def diagnostics(self) -> dict[str, dict]:
        return {"cross_stitch_alpha": {"tasks": self.task_names, "stages": [a.tolist() for a in self.alphas()]}}
