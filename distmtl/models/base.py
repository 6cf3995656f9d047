"""The multi-task model contract every architecture implements, and the architecture registry
(the architectures register themselves in their modules; ``distmtl.models`` imports them all).

Weightings and the engine rely only on this contract: ``forward`` returns ``{task: output}``,
``shared_parameters()`` / ``task_parameters(task)`` split the parameters, and
``representation`` is the branch point (the shared features the task heads read).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from distmtl.config.schema import ARCHITECTURE, ModelConfig
from distmtl.registry import Registry
from distmtl.tasks.base import Task

ARCHITECTURES: Registry = Registry("architecture", "model.architecture", ARCHITECTURE)


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

    def aligned_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """The parameters of the task's branch when the model has identical task branches (Selective Sharing), in a
        layout every task's branch shares, so that one task's update can be applied to another's branch; none here."""
        return iter(())

    def optimizer_groups(self) -> list[dict]:
        """Parameter groups for the optimizer; a group may carry ``lr_scale`` (a learning-rate multiplier)."""
        return [{"params": list(self.parameters())}]

    def extra_metrics(self) -> dict[str, float]:
        """Scalars about the model itself to report each epoch (e.g. learned mixing weights)."""
        return {}

    def diagnostics(self) -> dict[str, dict]:
        """JSON-serialisable records about the model to store with each epoch's checkpoint (name → record);
        :mod:`distmtl.tracking.plots` draws the ones it knows."""
        return {}

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


def build_model(cfg: ModelConfig, tasks: dict[str, Task], in_channels: int, **inputs: Any) -> MultiTaskModel:
    """Build the configured architecture for ``tasks`` on images with ``in_channels`` channels; ``inputs``
    are what an architecture takes beyond the config (e.g. ``aux_transfer``'s frozen encoders)."""
    return ARCHITECTURES.get(cfg.architecture)(cfg, tasks, in_channels, **inputs)
