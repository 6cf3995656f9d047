"""Selective Sharing: task branches that merge during training, decided from clustered task gradients.

Two shapes, both "identical task branches on a hard-shared part" (same layers, same initial weights,
then each task's own output layer):

- fully connected branches (default): the whole encoder and a hard-shared layer (Linear + ReLU,
  ``selective.hidden`` units) are shared; each branch is ``branch_layers`` Linear + ReLU layers;
- convolutional branches (``selective.shared_stages = s``): the encoder's first ``s`` stages are
  shared; each branch is the encoder's remaining stages, its bottleneck and ``branch_layers``
  Linear + ReLU layers. On data where the tasks need different features (the generator's geometry
  and appearance tasks), sharing every convolution costs the geometry tasks most of their accuracy
  (hard sharing against independent networks); here they keep their own features until they merge.
  With ``s = 0`` and ``branch_layers = 0`` a branch is exactly an independent network's encoder, so
  the model spans independent networks (no merge) to hard sharing (one branch) at equal capacity.

The model holds the branches and the task → branch map, and merges branches when told to
(:meth:`SelectiveSharing.merge`). When to merge is decided by
:class:`distmtl.engine.selective.SelectiveSharingController`, which the engine runs: it captures
per-task gradients at each task's :meth:`~SelectiveSharing.branch_point` every step, and at the end
of each epoch has rank 0 factorise and cluster them and broadcast the merge plan.
"""

from __future__ import annotations

import copy
import json
import zlib
from collections.abc import Iterator

import torch
from pydantic import Field, model_validator
from torch import nn

from distmtl.config.plugins import Settings
from distmtl.config.schema import ModelConfig
from distmtl.errors import ConfigError
from distmtl.features import Features, FeatureShape
from distmtl.models.base import ARCHITECTURES, MultiTaskModel
from distmtl.models.encoders import ENCODERS
from distmtl.sharing.plan import KEPT_BY_LOSS, Merge, apply_to_map
from distmtl.tasks.base import Task

VECTOR_KINDS = {"classification", "binary", "regression", "detection", "ranking"}


class SelectiveBranches(Settings):
    """The branches' shape, and fixed groups (``model.selective``; the structure controller adds its grouping keys)."""

    hidden: int = Field(64, gt=0, description="Width of the hard-shared layer and of every branch layer.")
    branch_layers: int = Field(2, ge=0, description="Fully connected layers per task branch (the identical branch "
                                                    "body); 0 only with convolutional branches, which then end at the "
                                                    "encoder's bottleneck as an independent network does.")
    shared_stages: int | None = Field(
        None, ge=0, description="Encoder stages hard-shared below the branches; the encoder's later stages and its "
                                "bottleneck become part of every branch (convolutional branches). Unset: the whole "
                                "encoder and one hidden layer are shared and the branches are fully connected.")
    groups: list[list[str]] = Field(
        default_factory=list,
        description="Fixed groups: the tasks of each group share a branch from the first step (a "
                    "one-task group keeps its own) and nothing is captured or merged; e.g. the "
                    "grouping an earlier run found, trained from scratch with the whole epoch budget.")

    @model_validator(mode="after")
    def _branches_have_a_body(self) -> SelectiveBranches:
        if self.branch_layers == 0 and self.shared_stages is None:
            raise ValueError("branch_layers 0 leaves fully connected branches empty; set shared_stages (convolutional "
                             "branches) or branch_layers ≥ 1")
        return self


class SelectiveSharingSettings(Settings):
    """The ``model`` keys of ``selective_sharing``."""

    selective: SelectiveBranches = Field(default_factory=SelectiveBranches)


@ARCHITECTURES.register("selective_sharing", settings=SelectiveSharingSettings)
class SelectiveSharing(MultiTaskModel):
    """Branches keyed ``b0 … b{K-1}``; ``branch_of`` maps each task to its (possibly shared) branch."""

    def __init__(self, cfg: ModelConfig, tasks: dict[str, Task], in_channels: int) -> None:
        super().__init__()
        dense = [t for t, task in tasks.items() if task.kind not in VECTOR_KINDS]
        if dense:
            raise ConfigError(f"model.architecture: selective_sharing branches are fully connected; tasks {dense} "
                              f"are dense ({', '.join(sorted({tasks[t].kind for t in dense}))})")
        self.cfg = cfg.selective
        self.model_cfg, self.in_channels = cfg, in_channels
        self.task_names = list(tasks)
        encoder = ENCODERS.get(cfg.encoder)(cfg, in_channels)
        stages = self.cfg.shared_stages
        if stages is not None and stages >= len(encoder.stages):
            raise ConfigError(f"model.selective.shared_stages: {stages} leaves no stage for the branches; encoder "
                              f"{cfg.encoder!r} has {len(encoder.stages)} stages here, "
                              f"so use 0 … {len(encoder.stages) - 1}")
        if stages is None:
            self.encoder = encoder
            self.shared = nn.Sequential(_relu_linear(encoder.out_features, self.cfg.hidden), nn.ReLU(inplace=True))
        else:
            self.encoder = nn.Sequential(*encoder.stages[:stages])
            self.shared = nn.Identity()
        first = self._branch()  # every branch starts as a copy of this one: identical initial weights
        self.branch_of = initial_branches(self.task_names, self.cfg.groups)
        self.branches = nn.ModuleDict({b: copy.deepcopy(first) for b in dict.fromkeys(self.branch_of.values())})
        width = encoder.out_features if stages is not None and not self.cfg.branch_layers else self.cfg.hidden
        shape = FeatureShape(width, tuple(encoder.stage_channels), in_channels)
        self.heads = nn.ModuleDict({t: task.head(shape) for t, task in tasks.items()})

    def _branch(self) -> nn.Sequential:
        """A new branch: fully connected layers, below them (convolutional branches) the encoder's later
        stages and bottleneck, freshly initialised."""
        layers: list[nn.Module] = []
        fan_in = self.cfg.hidden
        if self.cfg.shared_stages is not None:
            encoder = ENCODERS.get(self.model_cfg.encoder)(self.model_cfg, self.in_channels)
            layers += [*encoder.stages[self.cfg.shared_stages:], encoder.bottleneck]
            fan_in = encoder.out_features
        for _ in range(self.cfg.branch_layers):
            layers += [_relu_linear(fan_in, self.cfg.hidden), nn.ReLU(inplace=True)]
            fan_in = self.cfg.hidden
        return nn.Sequential(*layers)

    # --- the model contract -------------------------------------------------------------------
    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The hard-shared part's output: what every branch reads."""
        if self.cfg.shared_stages is None:
            return self.shared(self.encoder(x).vector)
        return self.encoder(x)

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        z = self._trunk(x)
        return z if z.dim() == 2 else z.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self._trunk(x)
        hidden = {b: self.branches[b](z) for b in sorted(set(self.branch_of.values()))}
        size = tuple(x.shape[-2:])
        return {t: self.heads[t](Features(hidden[self.branch_of[t]], [], size)) for t in self.task_names}  # type: ignore[arg-type]

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.encoder.parameters()
        yield from self.shared.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """The task's branch (shared with the other tasks on it) and its own output layer."""
        yield from self.branches[self.branch_of[task]].parameters()
        yield from self.heads[task].parameters()

    def aligned_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """The task's branch (every branch has the same layers, so one task's branch step applies to any branch)."""
        yield from self.branches[self.branch_of[task]].parameters()

    def parameter_counts(self) -> dict[str, int]:
        counts = super().parameter_counts()
        counts["branches"] = sum(p.numel() for p in self.branches.parameters())
        return counts

    # --- what the controller reads and changes ------------------------------------------------
    def branch_point(self, task: str) -> nn.Parameter:
        """The weight whose per-task gradients are compared: the first layer of the task's branch (hidden ×
        hidden, or the first convolution of a convolutional branch; the same shape for every task). Every
        branch starts from the same weights, so the tasks' gradients there are comparable."""
        return next(p for p in self.branches[self.branch_of[task]].parameters() if p.dim() >= 2)

    def merge(self, merges: list[Merge]) -> None:
        """Merge branches as planned (every rank applies the same plan, so the models stay identical)."""
        with torch.no_grad():
            for merge in merges:
                self._merge(merge)
        self.branch_of = apply_to_map(self.branch_of, merges)

    def _merge(self, merge: Merge) -> None:
        survivor = self.branches[merge.survivor]
        if merge.rule not in KEPT_BY_LOSS:
            reduce = {"mean": lambda s: s.mean(0), "max": lambda s: s.amax(0), "min": lambda s: s.amin(0)}[merge.rule]
            for name, param in survivor.named_parameters():
                stacked = torch.stack([self.branches[m].get_parameter(name) for m in merge.members])
                param.copy_(reduce(stacked))
        for member in merge.members:
            if member != merge.survivor:
                del self.branches[member]

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    # --- checkpoints and reporting ------------------------------------------------------------
    def structure(self) -> dict:
        return {"branch_of": dict(self.branch_of)}

    def restore_structure(self, structure: dict) -> None:
        if not structure:
            return
        self.branch_of = dict(structure["branch_of"])
        device = self._device()
        self.branches = nn.ModuleDict({b: self._branch().to(device) for b in sorted(set(self.branch_of.values()))})

    def groups(self) -> list[list[str]]:
        """The tasks of each branch, as sorted lists."""
        grouped: dict[str, list[str]] = {}
        for task in self.task_names:
            grouped.setdefault(self.branch_of[task], []).append(task)
        return sorted(grouped.values())

    def extra_metrics(self) -> dict[str, float]:
        fingerprint = zlib.crc32(json.dumps(sorted(self.branch_of.items())).encode())
        return {"selective/branches": len(self.branches), "selective/branch_map_crc32": fingerprint}


def initial_branches(tasks: list[str], groups: list[list[str]]) -> dict[str, str]:
    """The task → branch map at the start: a branch per task (``b0`` …), except that the tasks of each fixed group
    share the branch of its first task (in ``tasks``' order)."""
    branch_of = {t: f"b{i}" for i, t in enumerate(tasks)}
    seen: set[str] = set()
    for group in groups:
        unknown, repeated = sorted(set(group) - set(tasks)), sorted(seen & set(group))
        if unknown or repeated or not group:
            problem = (f"names tasks {unknown} that are not trained" if unknown else
                       f"puts {repeated} in two groups" if repeated else "is empty")
            raise ConfigError(f"model.selective.groups: {group} {problem}; list each of {tasks} at most once")
        seen.update(group)
        survivor = branch_of[min(group, key=tasks.index)]
        branch_of.update({t: survivor for t in group})
    return branch_of


def _relu_linear(fan_in: int, fan_out: int) -> nn.Linear:
    """A linear layer with He initialisation: the stack of ReLU layers above the encoder otherwise
    shrinks the signal enough for imbalanced one-vs-all tasks to stall at their base rate."""
    layer = nn.Linear(fan_in, fan_out)
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer
