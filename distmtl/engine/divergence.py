"""Stop a run at its first non-finite loss, with the epoch and step where it happened.

A diverged run would otherwise train on NaN weights to the end and look finished. The guard keeps
the first bad step on the device (no host sync per step on a GPU) and looks at it every
``check_every`` steps and at the end of every training epoch; all ranks look at the same steps
and agree through one all-reduce, so they stop together (a rank that stopped alone would leave
the others waiting in DDP's next all-reduce).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from distmtl.engine.context import DistContext

_NONE = torch.iinfo(torch.int64).max  # "no bad step yet"; min-reduced with real codes
_KINDS = ("nan", "inf", "-inf")
#: Steps between checks on a GPU: each check is one host sync (plus an all-reduce under DDP).
GPU_CHECK_EVERY = 50


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite. ``str()`` is the one-line reason."""

    def __init__(self, epoch: int, step: int | str, value: str) -> None:
        where = f"step {step}" if isinstance(step, int) else step
        super().__init__(f"diverged at epoch {epoch}, {where}: loss {value}")
        self.epoch, self.step, self.value = epoch, step, value

    @property
    def reason(self) -> str:
        return str(self)


class DivergenceGuard:
    """Watches the training loss of every step; raises :class:`TrainingDiverged` on every rank alike.

    On the CPU a check costs no device sync, so it checks every step (``check_every=1``) and stops
    at once; on a GPU it checks every :data:`GPU_CHECK_EVERY` steps, which bounds the wasted steps
    without a per-step sync, and still names the exact first bad step.
    """

    def __init__(self, ctx: DistContext, check_every: int | None = None) -> None:
        self.ctx = ctx
        self.check_every = check_every or (1 if ctx.device.type == "cpu" else GPU_CHECK_EVERY)
        self.epoch = 0
        self._step = 0
        self._first = torch.full((), _NONE, dtype=torch.int64, device=ctx.device)

    def start_epoch(self, epoch: int) -> None:
        """Count steps from 0 in ``epoch``."""
        self.epoch, self._step = epoch, 0

    def observe(self, loss: torch.Tensor) -> None:
        """Record this step's loss (device-side) and check when a check is due."""
        value = loss.detach()
        kind = torch.where(torch.isnan(value), 0, torch.where(value > 0, 1, 2))
        code = torch.where(torch.isfinite(value), _NONE, kind + self._step * len(_KINDS))
        self._first = torch.minimum(self._first, code)
        self._step += 1
        if self._step % self.check_every == 0:
            self.check()

    def check(self) -> None:
        """Raise :class:`TrainingDiverged` if any rank has seen a non-finite loss (a collective: every rank
        must call it at the same point)."""
        if self.ctx.world_size > 1:
            dist.all_reduce(self._first, op=dist.ReduceOp.MIN)
        code = int(self._first.item())
        if code != _NONE:
            raise TrainingDiverged(self.epoch, code // len(_KINDS), _KINDS[code % len(_KINDS)])

    def check_value(self, where: str, value: float) -> None:
        """Raise if an epoch-level loss (already reduced over ranks, e.g. validation) is not finite."""
        if not math.isfinite(value):
            raise TrainingDiverged(self.epoch, where, str(value))
