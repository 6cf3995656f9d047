"""The task contract and the registry of task kinds (the kinds themselves register in their modules).

A task turns a model output and a (possibly missing) target into a per-sample loss and into
*metric state*: a 1-D float64 tensor of sums (counts, sums of errors, ...). States add across
batches and across DDP ranks with a single all-reduce, and metrics are computed from the
summed state once per epoch, so the hot loop never syncs with the host.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import nn

from distmtl.data.sample_set import TargetSpec
from distmtl.errors import ConfigError
from distmtl.features import FeatureShape
from distmtl.registry import Registry
from distmtl.tasks.heads import VectorHead

TASK_KINDS: Registry[type[Task]] = Registry("task kind", "tasks")


class Task(ABC):
    """One task: its name, output size, head factory, per-sample loss and metrics."""

    kind: str = ""
    #: Metric names this kind reports, with the direction in which they improve.
    metric_modes: dict[str, str] = {}
    #: The metric that stands for the task in Δm (one of ``metric_modes``; never one that can change sign).
    headline: str = ""
    #: The figure :meth:`prediction_record` feeds (a plot name in :mod:`distmtl.tracking.plots`), if any.
    record_kind: str = ""
    #: The figure :meth:`example_record` feeds: a few test images with the predictions drawn over them, if any.
    example_kind: str = ""

    def __init__(self, name: str, spec: TargetSpec) -> None:
        self.name = name
        self.size = spec.size

    def metric_state_size(self) -> int:
        """Length of :meth:`metric_state`'s vector for this task."""
        return 2

    def head(self, shape: FeatureShape) -> nn.Module:
        """The module that maps an encoder's :class:`Features` to this task's output."""
        return VectorHead(shape, self.size)

    @abstractmethod
    def per_sample_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Unreduced loss, one value per sample (targets of masked samples may be placeholders)."""

    def masked_loss_terms(
        self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of loss over samples that carry a target, number of such samples)."""
        weights = mask.float()
        losses = self.per_sample_loss(output.float(), self.fill_missing(target, mask))
        return (losses * weights).sum(), weights.sum()

    def fill_missing(self, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Replace targets of masked-out samples by a valid placeholder so the loss stays finite."""
        shape = (-1,) + (1,) * (target.dim() - 1)
        return torch.where(mask.view(shape), target, torch.zeros_like(target))

    @abstractmethod
    def metric_state(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sufficient statistics of this batch's metrics (summed over masked-in samples), float64."""

    def prediction_record(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        """What :attr:`record_kind`'s figure draws from a split's outputs and targets (masked-in samples only)."""
        return {}

    def example_record(self, images: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        """What :attr:`example_kind`'s figure draws from a few test images (B×C×H×W in [0, 1]), their outputs
        and targets."""
        return {}

    @abstractmethod
    def metrics(self, state: torch.Tensor) -> dict[str, float]:
        """Metric values from a summed state; NaN where no sample carried a target."""


def image_bytes(images: torch.Tensor) -> list:
    """Images in [0, 1] as nested lists of bytes (0–255), small enough for a JSON record of a few examples."""
    return images.float().clamp(0, 1).mul(255).round().to(torch.uint8).tolist()


def register_kind(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: make a task kind available under ``name`` (and record it as the class's ``kind``)."""

    def decorator(cls: type[Task]) -> type[Task]:
        cls.kind = name
        return TASK_KINDS.register(name)(cls)

    return decorator


def build_tasks(names: list[str], specs: dict[str, TargetSpec]) -> dict[str, Task]:
    """Instantiate one task per name, of the kind its target spec declares."""
    tasks = {}
    for name in names:
        kind = specs[name].kind
        if kind not in TASK_KINDS:
            raise ConfigError(
                f"tasks: '{name}' is a {kind} target, and no task kind '{kind}' exists "
                f"(available kinds: {', '.join(TASK_KINDS)})"
            )
        tasks[name] = TASK_KINDS.get(kind)(name, specs[name])
    return tasks


def selectable_metrics(tasks: dict[str, Task], delta_m: bool = False) -> dict[str, str]:
    """Every validation metric the engine reports, with the direction in which it improves (``val/delta_m``
    where the run has a single-task baseline)."""
    names = {"val/loss": "min", "val/loss_unweighted": "min", **({"val/delta_m": "max"} if delta_m else {})}
    for name, task in tasks.items():
        names[f"val/{name}/loss"] = "min"
        names.update({f"val/{name}/{metric}": mode for metric, mode in task.metric_modes.items()})
    return names
