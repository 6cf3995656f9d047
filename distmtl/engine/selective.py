"""Selective Sharing's capture → decide → apply cycle, run by the trainer on every rank.

Every training step, the gradient of each task's loss with respect to its branch point (the
first layer of its branch) is captured with ``torch.autograd.grad`` — never written to ``.grad``,
so the update is the same as without capture — and summed over the epoch. At the end of each
epoch the sums are all-reduced across ranks and each task's sum is scaled to unit norm, so that every
epoch weighs alike (gradients shrink as training goes on). A decision reads the sum of the last
``window`` epochs: one epoch's gradient direction is noisy, and a merge cannot be undone. Rank 0
factorises that sum (tensor train), groups the tasks (HDBSCAN, by the configured criterion) and plans
the merges; the plan is broadcast and every rank applies it, so the models stay identical. After a
merge the window starts afresh: the merged tasks' gradients now belong to one branch. Capture starts
at ``start_epoch`` (early on, when every task still learns its base rate, all gradients look alike)
and stops once every task shares a branch with another, or after ``patience`` decisions without a
merge: the lock epoch.
"""

from __future__ import annotations

from typing import Any

import torch

from distmtl.engine.context import DistContext
from distmtl.engine.structure import CONTROLLERS
from distmtl.models.selective_sharing import SelectiveSharing
from distmtl.sharing.decide import decide
from distmtl.sharing.plan import MergePlan, every_task_grouped


@CONTROLLERS.register("selective_sharing")
class SelectiveSharingController:
    """Decides when :class:`SelectiveSharing`'s branches merge; keeps the lock state."""

    def __init__(self, model: SelectiveSharing) -> None:
        self.model = model
        self.cfg = model.cfg
        self.epoch = 0  # the epoch being trained, for the warm-up
        self.locked, self.lock_epoch, self.quiet_epochs = False, -1, 0
        self.last_plan: MergePlan | None = None
        self._gradients: dict[str, torch.Tensor] = {}
        self._window: list[torch.Tensor] = []  # the last epochs' unit-norm task gradients (K × branch-point shape each)

    @property
    def capturing(self) -> bool:
        return not self.locked and self.epoch >= self.cfg.start_epoch

    def observe(self, losses: dict[str, torch.Tensor]) -> None:
        if not self.capturing:
            return
        for task, loss in losses.items():
            (grad,) = torch.autograd.grad(loss, self.model.branch_point(task), retain_graph=True, allow_unused=True)
            if grad is not None:
                total = self._gradients.get(task)
                self._gradients[task] = grad.detach().float() if total is None else total + grad.detach().float()

    def end_epoch(self, ctx: DistContext, epoch: int, mean_losses: dict[str, float]) -> bool:
        capturing = self.capturing
        self.epoch = epoch + 1
        if not capturing:
            return False
        zeros = torch.zeros_like(self.model.branch_point(self.model.task_names[0]), dtype=torch.float32)
        stacked = torch.stack([self._gradients.get(t, zeros) for t in self.model.task_names]).double()
        self._gradients = {}
        ctx.all_reduce_sum(stacked)
        self._window = [*self._window, _unit_norm(stacked).cpu()][-self.cfg.window:]
        if len(self._window) < self.cfg.window:
            return False
        gradients = torch.stack(self._window).sum(0).numpy()
        plan = decide(gradients, self.model.task_names, self.model.branch_of, mean_losses, self.cfg) \
            if ctx.is_main else None
        plan = ctx.broadcast_object(plan)
        self.apply(plan, epoch)
        return plan.changes

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
        records: dict[str, dict] = {"selective_groups": {
            "groups": self.model.groups(), "branch_of": self.model.branch_of, "locked": self.locked,
            "lock_epoch": self.lock_epoch, "labels": plan.labels if plan else {}}}
        if plan and plan.similarity:
            records["selective_relatedness"] = {"tasks": self.model.task_names, "similarity": plan.similarity}
        return records

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "locked": self.locked, "lock_epoch": self.lock_epoch,
                "quiet_epochs": self.quiet_epochs, "window": list(self._window)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.locked = state["epoch"], state["locked"]
        self.lock_epoch, self.quiet_epochs = state["lock_epoch"], state["quiet_epochs"]
        self._window = list(state.get("window", []))


def _unit_norm(stacked: torch.Tensor) -> torch.Tensor:
    """Each task's gradient (a row of ``stacked``) scaled to unit Frobenius norm; zero rows stay zero."""
    norms = stacked.flatten(1).norm(dim=1).clamp(min=torch.finfo(stacked.dtype).tiny)
    return stacked / norms.view(-1, *([1] * (stacked.dim() - 1)))
