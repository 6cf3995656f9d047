"""The multi-task model contract every architecture implements, and the architecture registry.

Weightings and the engine rely only on this contract: ``forward`` returns ``{task: output}``,
``shared_parameters()`` / ``task_parameters(task)`` split the parameters, and
``representation`` is the branch point (the shared features the task heads read).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from distmtl.config.schema import ModelConfig
from distmtl.registry import Registry

if TYPE_CHECKING:
    from distmtl.tasks.base import Task

ARCHITECTURES: Registry = Registry("architecture", "model.architecture")


class MultiTaskModel(nn.Module):
    """Base class of all architectures."""

    task_names: list[str]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """The shared features at the branch point."""
        raise NotImplementedError

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def optimizer_groups(self) -> list[dict]:
        """Parameter groups for the optimizer; a group may carry ``lr_scale`` (a learning-rate multiplier)."""
        return [{"params": list(self.parameters())}]

    def extra_metrics(self) -> dict[str, float]:
        """Scalars about the model itself to report each epoch (e.g. learned mixing weights)."""
        return {}

    def artifacts(self) -> dict:
        """Files to store with each epoch's checkpoint and log to MLflow: name → matplotlib figure (PNG)
        or JSON-serialisable dict (JSON)."""
        return {}

    def observe_losses(self, losses: dict[str, torch.Tensor]) -> None:
        """Called every training step with the per-task losses, before the backward pass."""

    def end_epoch(self, ctx, epoch: int, mean_losses: dict[str, float]) -> bool:
        """Called on every rank after each training epoch; returns True when the parameters changed
        (the engine then rebuilds the optimizer and re-wraps DDP on every rank)."""
        return False

    def structure(self) -> dict:
        """What, beyond the state dict, rebuilds this model's shape (saved in checkpoints)."""
        return {}

    def restore_structure(self, structure: dict) -> None:
        """Reshape the model as ``structure`` says, before a state dict of that shape is loaded."""

    def parameter_counts(self) -> dict[str, int]:
        """Parameters in total, in the shared part, and per task (for logging and comparisons)."""
        counts = {"total": sum(p.numel() for p in self.parameters())}
        counts["shared"] = sum(p.numel() for p in self.shared_parameters())
        for task in self.task_names:
            counts[task] = sum(p.numel() for p in self.task_parameters(task))
        return counts


def build_model(cfg: ModelConfig, tasks: dict[str, Task], in_channels: int) -> MultiTaskModel:
    """Build the configured architecture for ``tasks`` on images with ``in_channels`` channels."""
    import distmtl.models.aux_transfer  # noqa: F401  (the modules register themselves)
    import distmtl.models.cross_stitch  # noqa: F401
    import distmtl.models.hard_sharing  # noqa: F401
    import distmtl.models.independent  # noqa: F401
    import distmtl.models.label_reuse  # noqa: F401
    import distmtl.models.selective_sharing  # noqa: F401

    return ARCHITECTURES.get(cfg.architecture)(cfg, tasks, in_channels)
