"""Structure controllers: per-architecture logic that changes a model's shape during training.

A controller sees every training step's per-task losses (:meth:`StructureController.observe`) and,
at the end of each epoch on every rank, decides whether the model's parameters change
(:meth:`StructureController.end_epoch`); the trainer then rebuilds the optimizer and re-wraps DDP.
Controllers register under the architecture they drive, with the settings they read (keys of the
architecture's ``model`` section).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from distmtl.config.schema import ARCHITECTURE
from distmtl.engine.context import DistContext
from distmtl.models import MultiTaskModel
from distmtl.registry import Registry


class StructureController(Protocol):
    """What the trainer calls; the state it returns is saved in checkpoints."""

    def observe(self, losses: dict[str, torch.Tensor], weights: dict[str, float]) -> None:
        """Called every training step with the per-task losses and this epoch's task weights, before the
        backward pass of their combination."""

    def end_epoch(self, ctx: DistContext, epoch: int, mean_losses: dict[str, float]) -> bool:
        """Called on every rank after each training epoch; True when the model's parameters changed."""

    def metrics(self) -> dict[str, float]:
        """Scalars to report each epoch."""

    def diagnostics(self) -> dict[str, dict]:
        """JSON-serialisable records to store with each epoch's checkpoint (``tracking`` draws them)."""

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


CONTROLLERS: Registry[type] = Registry("structure controller", "model.architecture", ARCHITECTURE)


def build_controller(architecture: str, model: MultiTaskModel) -> StructureController | None:
    """The controller registered for ``architecture``, attached to ``model``; None when it has none."""
    return CONTROLLERS.get(architecture)(model) if architecture in CONTROLLERS else None
