"""Selective Sharing's capture → decide → apply cycle, run by the trainer on every rank.

Every training step, the gradient of each task's loss with respect to its branch point (the
first layer of its branch) is captured and summed over the epoch; nothing is written to ``.grad``, so
the update is the same as without capture. A task alone on its branch costs almost nothing: the
training step's own backward pass reaches that branch point from this task's loss only, so a hook
on the branch point reads c·g there, and a hook on the task's loss reads the coefficient c (the
derivative of the combined loss by this task's loss), which is divided out. Tasks that share a branch
(and tasks weighted 0 this epoch, whose c·g is 0) are captured with ``torch.autograd.grad``, one call
per "round": a round holds at most one task per branch, so each branch point's gradient in it is that
task's alone; a step makes as many calls as the largest merged branch has tasks. At the end of each
epoch the sums are all-reduced across ranks and each task's sum is scaled to unit norm, so that every
epoch weighs alike (gradients shrink as training goes on). A decision reads the sum of the last
``window`` epochs: one epoch's gradient direction is noisy, and a merge cannot be undone. Rank 0
factorises that sum (tensor train), groups the tasks (HDBSCAN, by the configured criterion) and plans
the merges; the plan is broadcast and every rank applies it, so the models stay identical. After a
merge the window starts afresh: the merged tasks' gradients now belong to one branch. Capture starts
at ``start_epoch`` (early on, when every task still learns its base rate, all gradients look alike)
and stops once every task shares a branch with another, or after ``patience`` decisions without a
merge: the lock epoch. With fixed ``groups`` the structure is locked from the start. Under
``merge: lowest_loss`` the surviving branch of a merge is the one whose tasks' losses fell most, each
task's epoch loss taken relative to its first epoch's: raw losses of different task kinds are not
comparable (an MSE of 0.05 would always beat a cross-entropy of 1.5); ``merge: highest_loss`` keeps
the branch whose tasks' losses fell least. Under ``criterion: affinity`` nothing is captured at the
branch points: the run's :class:`~distmtl.engine.affinity.AffinityProbe` measures the lookahead
affinity between the tasks (every ``train.affinity_every`` steps, else every :data:`AFFINITY_EVERY`):
each task's step applied to every branch, net of the optimizer's drift (``lookahead_net``: whether
task i's gradient, fed to the optimizer, helps task j on its own branch), and the decision reads the
mean of its last ``window`` epochs' matrices. Every merge's effect is recorded (``selective_merges``):
each merged task's mean training loss over the :data:`EFFECT_STEPS` steps before the merge and as
many steps after it.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from distmtl.config.plugins import Settings
from distmtl.engine.affinity import SIGNALS
from distmtl.engine.context import DistContext
from distmtl.engine.merge_effects import MergeEffects
from distmtl.engine.structure import CONTROLLERS
from distmtl.models.selective_sharing import SelectiveSharing
from distmtl.sharing.decide import decide, decide_from_affinity
from distmtl.sharing.plan import MergePlan, every_task_grouped

#: Steps between two affinity measurements under ``criterion: affinity`` when ``train.affinity_every`` is 0.
AFFINITY_EVERY = 10
#: Training steps before and after a merge whose losses make its recorded effect.
EFFECT_STEPS = 20


class SelectiveGrouping(Settings):
    """How tasks are grouped and merged, and when the branches lock (``model.selective``, beside the branch shape)."""

    criterion: Literal["similarity", "dissimilarity", "variance", "affinity"] = Field(
        "similarity", description="What groups tasks: their gradients' similarity, dissimilarity or variance at the "
                                  "branch points, or their lookahead affinity (distmtl.engine.affinity).")
    min_cluster_size: int = Field(2, ge=2)
    epsilon: float = Field(0.25, ge=0, le=1, description="HDBSCAN cluster_selection_epsilon on [0, 1] task distances.")
    tt_rank: int = Field(4, ge=1, description="Tensor-train rank r: the length of every task's factor.")
    merge: Literal["lowest_loss", "highest_loss", "mean", "max", "min"] = Field(
        "lowest_loss", description="Which weights a merged branch keeps: the member branch whose tasks' losses fell "
                                   "most (lowest_loss) or least (highest_loss) relative to their first epoch, or the "
                                   "members' weights combined (mean, max, min).")
    patience: int = Field(3, ge=1, description="Lock after this many decisions in a row without a merge.")
    start_epoch: int = Field(0, ge=0,
                             description="First epoch whose gradients are captured (a warm-up before grouping).")
    window: int = Field(2, ge=1, description="Epochs of captured gradients (each task's unit-norm epoch sum, added up) "
                                             "behind every grouping decision; one epoch's direction is noisy.")


class SelectiveControllerSettings(Settings):
    """The ``model`` keys Selective Sharing's controller reads."""

    selective: SelectiveGrouping = Field(default_factory=SelectiveGrouping)


@CONTROLLERS.register("selective_sharing", settings=SelectiveControllerSettings)
class SelectiveSharingController:
    """Decides when :class:`SelectiveSharing`'s branches merge; keeps the lock state."""

    def __init__(self, model: SelectiveSharing) -> None:
        self.model = model
        self.cfg = model.cfg
        self.epoch = 0  # the epoch being trained, for the warm-up
        self.locked, self.lock_epoch, self.quiet_epochs = bool(self.cfg.groups), -1, 0  # fixed groups: never merge
        self.last_plan: MergePlan | None = None
        self._gradients: torch.Tensor | None = None  # the epoch's sum, K × branch-point shape, in task order
        self._rows: list[torch.Tensor] = []  # its rows, one view per task
        self._row_of = {t: i for i, t in enumerate(model.task_names)}
        self._hooked: tuple[tuple[str, ...], frozenset[str]] | None = None  # the branch map and tasks hooks serve
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._coefficients: dict[str, torch.Tensor] = {}  # this step's, per hooked task, until its gradient arrives
        self._window: list[torch.Tensor] = []  # the last epochs' unit-norm task gradients (K × branch-point shape each)
        self.first_losses: dict[str, float] | None = None  # each task's mean training loss in the first epoch
        self.effects = MergeEffects(model.task_names, EFFECT_STEPS)
        self._probe: Any = None  # the run's affinity probe, under criterion affinity
        self._owns_probe = False  # whether it measures only for this controller (then only while capturing)

    @property
    def capturing(self) -> bool:
        return not self.locked and self.epoch >= self.cfg.start_epoch

    @property
    def affinity_every(self) -> int:
        """How often the affinity criterion needs a measurement (0: it does not)."""
        return AFFINITY_EVERY if self.cfg.criterion == "affinity" and not self.cfg.groups else 0

    def use_affinity(self, probe: Any, owned: bool) -> None:
        """Read ``probe``'s epoch matrices (``owned``: it measures for this controller alone: only while grouping)."""
        self._probe, self._owns_probe = probe, owned
        self._gate_probe()

    def _gate_probe(self) -> None:
        if self._probe is not None and self._owns_probe:
            self._probe.enabled = self.capturing

    @property
    def epoch_gradients(self) -> torch.Tensor | None:
        """This epoch's captured gradient sums so far (K × branch-point shape, task order); None before any."""
        return self._gradients

    def observe(self, losses: dict[str, torch.Tensor], weights: dict[str, float]) -> None:
        self._coefficients.clear()
        self.effects.track(losses)
        if not self.capturing or self.cfg.criterion == "affinity":
            self._release_hooks()
            return
        if self._gradients is None:
            self._gradients = self._zero_sums()
            self._rows = list(self._gradients.unbind(0))
        hooked = self._hook_branch_points(weights)
        explicit = {t: b for t, b in self.model.branch_of.items() if t not in hooked}
        for tasks in capture_rounds(explicit):
            points = [self.model.branch_point(t) for t in tasks]
            grads = torch.autograd.grad([losses[t] for t in tasks], points, retain_graph=True, allow_unused=True)
            for task, grad in zip(tasks, grads):
                if grad is not None:
                    self._rows[self._row_of[task]].add_(grad.detach().float())
        for task in hooked:
            losses[task].register_hook(partial(self._coefficients.__setitem__, task))

    def _hook_branch_points(self, weights: dict[str, float]) -> frozenset[str]:
        """The tasks captured from the training step's own backward pass: those alone on their branch and
        weighted above 0. Their branch points carry a hook while that set and the branch map stay as they are."""
        branch_of = self.model.branch_of
        sizes = Counter(branch_of.values())
        hooked = frozenset(t for t, b in branch_of.items() if sizes[b] == 1 and weights.get(t, 1.0) != 0)
        if self._hooked != (key := (tuple(branch_of.values()), hooked)):
            self._release_hooks()
            self._hooks = [self.model.branch_point(t).register_hook(partial(self._add, t)) for t in hooked]
            self._hooked = key
        return hooked

    def _add(self, task: str, grad: torch.Tensor) -> None:
        """A hooked branch point's gradient c·g arrived: add g (c: the step's coefficient of the task's loss).
        Backward passes that did not go through this step's loss (no coefficient) add nothing."""
        coefficient = self._coefficients.pop(task, None)
        if coefficient is not None and self._gradients is not None:
            self._rows[self._row_of[task]].addcdiv_(grad.detach().float(), coefficient.float())

    def _release_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks, self._hooked = [], None

    def end_epoch(self, ctx: DistContext, epoch: int, mean_losses: dict[str, float]) -> bool:
        capturing = self.capturing
        self.epoch = epoch + 1
        self.first_losses = self.first_losses or dict(mean_losses)
        self.effects.close(ctx)
        if not capturing:
            self._gate_probe()
            return False
        evidence = self._affinity_evidence() if self.cfg.criterion == "affinity" else self._gradient_evidence(ctx)
        if evidence is None:
            self._gate_probe()
            return False
        plan = None
        if ctx.is_main:
            choose = decide_from_affinity if self.cfg.criterion == "affinity" else decide
            plan = choose(evidence, self.model.task_names, self.model.branch_of, self.relative(mean_losses), self.cfg)
        plan = ctx.broadcast_object(plan)
        self.effects.merged(ctx, plan.merges, self.model.branch_of, epoch, self.first_losses)
        self.apply(plan, epoch)
        self._gate_probe()
        return plan.changes

    def _gradient_evidence(self, ctx: DistContext) -> np.ndarray | None:
        """The sum of the window's unit-norm epoch gradients (all-reduced), once the window is full."""
        stacked = (self._gradients if self._gradients is not None else self._zero_sums()).double()
        self._gradients, self._rows = None, []
        ctx.all_reduce_sum(stacked)
        self._window = [*self._window, unit_norm(stacked).cpu()][-self.cfg.window:]
        if len(self._window) < self.cfg.window:
            return None
        return torch.stack(self._window).sum(0).numpy()

    def _affinity_evidence(self) -> np.ndarray | None:
        """The mean of the window's epoch ``lookahead_net`` matrices (the probe's, the same on every rank), once it is
        full."""
        if self._probe is None or self._probe.epoch_mean is None:
            return None
        matrix = self._probe.epoch_mean[SIGNALS.index("lookahead_net")].clone()
        self._window = [*self._window, matrix][-self.cfg.window:]
        if len(self._window) < self.cfg.window:
            return None
        return torch.stack(self._window).mean(0).numpy()

    def relative(self, mean_losses: dict[str, float]) -> dict[str, float]:
        """Each task's epoch loss divided by its first epoch's (0 where that was 0): comparable across task kinds."""
        first = self.first_losses or mean_losses
        return {t: loss / first[t] if first[t] > 0 else 0.0 for t, loss in mean_losses.items()}

    def _zero_sums(self) -> torch.Tensor:
        point = self.model.branch_point(self.model.task_names[0])
        return torch.zeros(len(self.model.task_names), *point.shape, device=point.device)

    def apply(self, plan: MergePlan, epoch: int) -> None:
        """Merge as planned and update the stop state (identically on every rank)."""
        self.model.merge(plan.merges)
        self.last_plan = plan
        if plan.changes:
            self._window = []
        self.quiet_epochs = 0 if plan.changes else self.quiet_epochs + 1
        if every_task_grouped(self.model.branch_of) or self.quiet_epochs >= self.cfg.patience:
            self.locked, self.lock_epoch = True, epoch

    def metrics(self) -> dict[str, float]:
        return {"selective/locked": float(self.locked), "selective/lock_epoch": self.lock_epoch}

    def diagnostics(self) -> dict[str, dict]:
        plan = self.last_plan
        records: dict[str, dict] = {}
        if self.effects.records:
            records["selective_merges"] = {"merges": self.effects.records}
        records["selective_groups"] = {
            "groups": self.model.groups(), "branch_of": self.model.branch_of, "locked": self.locked,
            "lock_epoch": self.lock_epoch, "labels": plan.labels if plan else {}}
        if plan and plan.similarity:
            records["selective_relatedness"] = {"tasks": self.model.task_names, "similarity": plan.similarity}
        return records

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "locked": self.locked, "lock_epoch": self.lock_epoch,
                "quiet_epochs": self.quiet_epochs, "window": list(self._window), "first_losses": self.first_losses,
                "merge_effects": self.effects.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.locked = state["epoch"], state["locked"]
        self.lock_epoch, self.quiet_epochs = state["lock_epoch"], state["quiet_epochs"]
        self._window = list(state.get("window", []))
        self.first_losses = state.get("first_losses")
        self.effects.load_state_dict(state.get("merge_effects", []))
        self._gate_probe()


def capture_rounds(branch_of: dict[str, str]) -> list[list[str]]:
    """The tasks of each capture call: the i-th call takes the i-th task of every branch that has one, so no
    call holds two tasks of one branch (their gradients at its branch point would add up)."""
    by_branch: dict[str, list[str]] = {}
    for task, branch in branch_of.items():
        by_branch.setdefault(branch, []).append(task)
    depth = max(map(len, by_branch.values()), default=0)
    return [[tasks[i] for tasks in by_branch.values() if i < len(tasks)] for i in range(depth)]


def unit_norm(stacked: torch.Tensor) -> torch.Tensor:
    """Each task's gradient (a row of ``stacked``) scaled to unit Frobenius norm; zero rows stay zero."""
    norms = stacked.flatten(1).norm(dim=1).clamp(min=torch.finfo(stacked.dtype).tiny)
    return stacked / norms.view(-1, *([1] * (stacked.dim() - 1)))
