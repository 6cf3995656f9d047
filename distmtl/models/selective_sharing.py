"""Selective Sharing: task branches that merge during training, decided from clustered task gradients.

encoder → hard-shared layer (Linear + ReLU, ``selective.hidden`` units) → one branch per task, all
identical at the start (same layers, same initial weights) → each task's own output layer.

Every training step, the gradient of each task's loss with respect to the weight of the *first
layer of its branch* (hidden × hidden: the same shape for every task, so the gradients compare) is
captured with ``torch.autograd.grad`` — it is never written to ``.grad``, so the update is the same
as without capture — and summed over the epoch. At the end of each epoch the sums are all-reduced
across ranks; rank 0 factorises them (tensor train), groups the tasks (HDBSCAN, by the configured
criterion), plans the merges and broadcasts the plan; every rank applies it, and the engine
rebuilds the optimizer (keeping the surviving parameters' state) and re-wraps DDP. Capture starts
at ``start_epoch`` (early on, when every task still learns its base rate, all gradients look alike)
and stops once every task shares a branch with another, or after ``patience`` epochs without a
merge: the lock epoch.
"""

from __future__ import annotations

import copy
import json
import zlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from distmtl.config.schema import ModelConfig
from distmtl.errors import ConfigError
from distmtl.models.base import ARCHITECTURES, MultiTaskModel
from distmtl.models.encoders import ENCODERS
from distmtl.models.features import FeatureShape
from distmtl.sharing.plan import Merge, MergePlan, apply_to_map, every_task_grouped, plan_merges
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
        self.locked, self.lock_epoch, self.quiet_epochs = False, -1, 0
        self.epoch = 0  # the epoch being trained, for the warm-up
        self.last_plan: MergePlan | None = None
        self._gradients: dict[str, torch.Tensor] = {}

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

    # --- gradient capture ---------------------------------------------------------------------
    def observe_losses(self, losses: dict[str, torch.Tensor]) -> None:
        if self.locked or not self.training or self.epoch < self.cfg.start_epoch:
            return
        for task, loss in losses.items():
            weight = self.branches[self.branch_of[task]][0].weight
            (grad,) = torch.autograd.grad(loss, weight, retain_graph=True, allow_unused=True)
            if grad is not None:
                total = self._gradients.get(task)
                self._gradients[task] = grad.detach().float() if total is None else total + grad.detach().float()

    # --- the epoch-end decision ---------------------------------------------------------------
    def end_epoch(self, ctx, epoch: int, mean_losses: dict[str, float]) -> bool:
        self.epoch = epoch + 1
        if self.locked or epoch < self.cfg.start_epoch:
            return False
        zeros = torch.zeros(self.cfg.hidden, self.cfg.hidden, device=self._device())
        stacked = torch.stack([self._gradients.get(t, zeros) for t in self.task_names]).double()
        self._gradients = {}
        ctx.all_reduce_sum(stacked)
        plan = decide(stacked.cpu().numpy(), self.task_names, self.branch_of, mean_losses, self.cfg) if ctx.is_main else None
        plan = ctx.broadcast_object(plan)
        self.apply_plan(plan, epoch)
        return plan.changes

    def apply_plan(self, plan: MergePlan, epoch: int) -> None:
        """Merge branches as planned (identically on every rank) and update the stop state."""
        with torch.no_grad():
            for merge in plan.merges:
                self._merge(merge)
        self.branch_of = apply_to_map(self.branch_of, plan.merges)
        self.last_plan = plan
        self.quiet_epochs = 0 if plan.changes else self.quiet_epochs + 1
        if every_task_grouped(self.branch_of) or self.quiet_epochs >= self.cfg.patience:
            self.locked, self.lock_epoch = True, epoch

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
        return {"branch_of": dict(self.branch_of), "locked": self.locked, "lock_epoch": self.lock_epoch,
                "quiet_epochs": self.quiet_epochs, "epoch": self.epoch}

    def restore_structure(self, structure: dict) -> None:
        if not structure:
            return
        self.branch_of = dict(structure["branch_of"])
        self.locked, self.lock_epoch, self.quiet_epochs = structure["locked"], structure["lock_epoch"], structure["quiet_epochs"]
        self.epoch = structure["epoch"]
        device = self._device()
        self.branches = nn.ModuleDict({b: self._branch().to(device) for b in sorted(set(self.branch_of.values()))})

    def groups(self) -> list[list[str]]:
        grouped: dict[str, list[str]] = {}
        for task in self.task_names:
            grouped.setdefault(self.branch_of[task], []).append(task)
        return sorted(grouped.values())

    def extra_metrics(self) -> dict[str, float]:
        fingerprint = zlib.crc32(json.dumps(sorted(self.branch_of.items())).encode())
        return {"selective/branches": len(self.branches), "selective/locked": float(self.locked),
                "selective/lock_epoch": self.lock_epoch, "selective/branch_map_crc32": fingerprint}

    def artifacts(self) -> dict:
        plan = self.last_plan
        files: dict = {"selective_groups": {"groups": self.groups(), "branch_of": self.branch_of,
                                            "locked": self.locked, "lock_epoch": self.lock_epoch,
                                            "labels": plan.labels if plan else {}}}
        if plan and plan.similarity:
            files["selective_relatedness"] = relatedness_figure(np.array(plan.similarity), self.task_names)
        return files


def _relu_linear(fan_in: int, fan_out: int) -> nn.Linear:
    """A linear layer with He initialisation: the stack of ReLU layers above the encoder otherwise
    shrinks the signal enough for imbalanced one-vs-all tasks to stall at their base rate."""
    layer = nn.Linear(fan_in, fan_out)
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer


def decide(gradients: np.ndarray, tasks: list[str], branch_of: dict[str, str], losses: dict[str, float], cfg) -> MergePlan:
    """Rank 0's decision: factorise, group, plan."""
    from distmtl.sharing.factorise import task_factors
    from distmtl.sharing.grouping import cosine_similarity, group_tasks

    factors = task_factors(gradients, cfg.tt_rank)
    labels = dict(zip(tasks, (int(v) for v in group_tasks(factors, cfg.criterion, cfg.min_cluster_size, cfg.epsilon))))
    return MergePlan(labels=labels, merges=plan_merges(labels, branch_of, losses, cfg.merge),
                     similarity=cosine_similarity(factors).tolist())


def relatedness_figure(similarity: np.ndarray, tasks: list[str]):
    """Heat map of the tasks' gradient-factor cosine similarity, ordered by an average-linkage dendrogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram, linkage
    from scipy.spatial.distance import squareform

    distance = np.clip(1.0 - similarity, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    fig, (top, heat) = plt.subplots(2, 1, figsize=(0.45 * len(tasks) + 3, 0.45 * len(tasks) + 4),
                                    gridspec_kw={"height_ratios": [1, 3]})
    tree = dendrogram(linkage(squareform(distance, checks=False), "average"), labels=tasks, ax=top, no_labels=True)
    top.set_title("task relatedness (cosine of gradient factors)")
    top.axis("off")
    order = tree["leaves"]
    image = heat.imshow(similarity[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
    heat.set_xticks(range(len(order)), [tasks[i] for i in order], rotation=60, ha="right")
    heat.set_yticks(range(len(order)), [tasks[i] for i in order])
    fig.colorbar(image, ax=heat, fraction=0.046)
    fig.tight_layout()
    return fig
