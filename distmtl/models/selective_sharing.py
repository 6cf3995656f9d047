"""Selective Sharing: task branches that merge during training, decided from clustered task gradients.

encoder → hard-shared layer (Linear + ReLU, ``selective.hidden`` units) → one branch per task, all
identical at the start (same layers, same initial weights) → each task's own output layer.

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
from torch import nn

from distmtl.config.schema import ModelConfig
from distmtl.errors import ConfigError
from distmtl.features import FeatureShape
from distmtl.models.base import ARCHITECTURES, MultiTaskModel
from distmtl.models.encoders import ENCODERS
from distmtl.sharing.plan import Merge, apply_to_map
from distmtl.tasks.base import Task

VECTOR_KINDS = {"classification", "binary", "regression", "detection", "ranking"}


@ARCHITECTURES.register("selective_sharing")
class SelectiveSharing(MultiTaskModel):
    """Branches keyed ``b0 … b{K-1}``; ``branch_of`` maps each task to its (possibly shared) branch."""

    def __init__(self, cfg: ModelConfig, tasks: dict[str, Task], in_channels: int) -> None:
        super().__init__()
        dense = [t for t, task in tasks.items() if task.kind not in VECTOR_KINDS]
        if dense:
            raise ConfigError(f"model.architecture: selective_sharing branches are fully connected; tasks {dense} "
                              f"are dense ({', '.join(sorted({tasks[t].kind for t in dense}))})")
        self.cfg = cfg.selective
        self.task_names = list(tasks)
        self.encoder = ENCODERS.get(cfg.encoder)(cfg, in_channels)
        hidden = self.cfg.hidden
        self.shared = nn.Sequential(_relu_linear(self.encoder.out_features, hidden), nn.ReLU(inplace=True))
        first = self._branch()  # every branch starts as a copy of this one: identical initial weights
        self.branches = nn.ModuleDict({f"b{i}": copy.deepcopy(first) for i in range(len(tasks))})
        self.branch_of = {t: f"b{i}" for i, t in enumerate(tasks)}
        shape = FeatureShape(hidden, tuple(self.encoder.stage_channels), in_channels)
        self.heads = nn.ModuleDict({t: task.head(shape) for t, task in tasks.items()})

    def _branch(self) -> nn.Sequential:
        layers: list[nn.Module] = []
        for _ in range(self.cfg.branch_layers):
            layers += [_relu_linear(self.cfg.hidden, self.cfg.hidden), nn.ReLU(inplace=True)]
        return nn.Sequential(*layers)

    # --- the model contract -------------------------------------------------------------------
    def representation(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.encoder(x).vector)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder(x)
        z = self.shared(features.vector)
        hidden = {b: self.branches[b](z) for b in sorted(set(self.branch_of.values()))}
        return {t: self.heads[t](features.with_vector(hidden[self.branch_of[t]])) for t in self.task_names}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.encoder.parameters()
        yield from self.shared.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """The task's branch (shared with the other tasks on it) and its own output layer."""
        yield from self.branches[self.branch_of[task]].parameters()
        yield from self.heads[task].parameters()

    def parameter_counts(self) -> dict[str, int]:
        counts = super().parameter_counts()
        counts["branches"] = sum(p.numel() for p in self.branches.parameters())
        return counts

    # --- what the controller reads and changes ------------------------------------------------
    def branch_point(self, task: str) -> nn.Parameter:
        """The weight whose per-task gradients are compared: the first layer of the task's branch
        (hidden × hidden, the same shape for every task)."""
        return self.branches[self.branch_of[task]][0].weight

    def merge(self, merges: list[Merge]) -> None:
        """Merge branches as planned (every rank applies the same plan, so the models stay identical)."""
        with torch.no_grad():
            for merge in merges:
                self._merge(merge)
        self.branch_of = apply_to_map(self.branch_of, merges)

    def _merge(self, merge: Merge) -> None:
        survivor = self.branches[merge.survivor]
        if merge.rule != "lowest_loss":
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


def _relu_linear(fan_in: int, fan_out: int) -> nn.Linear:
    """A linear layer with He initialisation: the stack of ReLU layers above the encoder otherwise
    shrinks the signal enough for imbalanced one-vs-all tasks to stall at their base rate."""
    layer = nn.Linear(fan_in, fan_out)
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer
