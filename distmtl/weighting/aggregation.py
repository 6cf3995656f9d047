"""Gradient-level methods: each task's gradient of the shared parameters, reduced across ranks, aggregated into one
update.

A step computes, on the unwrapped model, one ``torch.autograd.grad`` per task: the gradient of λₖ·Lₖ (its batch
mean times its static weight) with respect to the parameters several tasks reach (a row of the K × P Jacobian J)
and to the task's own parameters. ``backward()`` on a DDP module per task would all-reduce each task's gradient
into the same ``.grad`` and mix them; here the engine does not wrap the model in DDP at all, and the method issues
the one reduction itself. What a method means with N workers (``weighting.reduction``):

- ``exact`` (the default): each rank scales its task gradients by its number of samples carrying that task's
  target; J, the task-own gradients and the K counts are summed across ranks in one all-reduce and divided by the
  global counts. Every rank then holds the gradients of the union of the N batches' task means, runs the same
  aggregation on them (random methods with the same seed) and applies the same update: N workers equal one process
  on the union batch, to float tolerance (batch-norm statistics are per rank, as under DDP). It sends K × the
  shared gradient, plus the task-own gradients and K counts, per step.
- ``local``: each rank aggregates its own batch's J and the N updates are averaged (the task-own gradients are
  still reduced exactly): 1 × the shared gradient per step, but the mean of the aggregations is not the
  aggregation of the mean, so it approximates the exact update.

The reported ``weight/<task>`` is the epoch mean of λₖ·wₖ, wₖ the task's weight in the update (the method's own
weights where it has them, else the least-squares coefficients of the update on the task gradients).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from distmtl.config.plugins import Settings
from distmtl.config.schema import WeightingConfig
from distmtl.weighting.base import Collectives, Step, WeightAverage, Weighting


class GradientSettings(Settings):
    """The ``weighting`` keys of every gradient-level method."""

    reduction: Literal["exact", "local"] = Field(
        "exact", description="exact: aggregate the task gradients of the union of all workers' batches (sends K × the "
                             "shared gradient per step); local: average the workers' own aggregations (approximate).")


class GradientWeighting(Weighting):
    """Base of the gradient-level methods: subclasses implement :meth:`aggregate`; ``random`` marks a method that
    draws random numbers (then seeded alike on every rank, step by step)."""

    kind = "gradient"
    reduces_gradients = True
    uses_split = True
    random = False

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks)
        self.reduction = cfg.reduction
        self.average = WeightAverage(self.tasks)
        self.static_row = torch.tensor([self.static[t] for t in self.tasks], dtype=torch.float64)
        self._sent, self._steps = 0, 0

    def aggregate(self, jacobian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The update direction (P) and each task's weight in it (K) from the K × P Jacobian of the weighted task
        losses."""
        raise NotImplementedError

    def backward(self, losses: dict[str, torch.Tensor], weights: dict[str, float], step: Step) -> torch.Tensor:
        split, last = step.split, len(self.tasks) - 1
        scaled = [self.static[t] * losses[t] for t in self.tasks]
        rows, own = [], []
        for k, task in enumerate(self.tasks):
            wrt = [*split.shared, *split.own[task]]
            grads = torch.autograd.grad(scaled[k], wrt, retain_graph=k < last, allow_unused=True)
            rows.append(flat_gradients(grads[: len(split.shared)], split.shared, scaled[k].device))
            own.append(flat_gradients(grads[len(split.shared):], split.own[task], scaled[k].device))
        jacobian = torch.stack(rows).float()
        counts = torch.stack([step.counts[t] for t in self.tasks]).float()
        if self.reduction == "exact":
            jacobian, own = self._reduce(jacobian, own, counts, step.comm, exact=True)
            direction, task_weights = self._aggregate(jacobian, step)
        else:
            direction, task_weights = self._aggregate(jacobian, step)
            direction, own = self._reduce(direction[None], own, counts, step.comm, exact=False)
            direction = direction[0]
        _write(direction, split.shared)
        for task, flat in zip(self.tasks, own):
            _write(flat, split.own[task])
        self.average.add(task_weights * self.static_row.to(task_weights.device, task_weights.dtype))
        return sum(scaled).detach()

    def _aggregate(self, jacobian: torch.Tensor, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        if jacobian.shape[1] == 0:  # no parameter is shared (independent networks): nothing to aggregate
            return jacobian.sum(0), torch.ones(len(self.tasks), device=jacobian.device)
        if not self.random:
            return self.aggregate(jacobian)
        devices = [jacobian.device] if jacobian.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(step.generator_seed())
            return self.aggregate(jacobian)

    def _reduce(self, shared: torch.Tensor, own: list[torch.Tensor], counts: torch.Tensor, comm: Collectives,
                exact: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One all-reduce of the shared rows (count-weighted when ``exact``, else averaged), the task-own gradients
        (count-weighted) and the counts; a no-op in a single process."""
        if comm.world_size == 1:
            return shared, own
        rows, own, sent = union_means(shared, counts, comm, own, weight_rows=exact)
        self._sent += sent
        self._steps += 1
        return (rows if exact else rows / comm.world_size), own

    def epoch_metrics(self) -> dict[str, float]:
        metrics = self.average.metrics()
        if self._steps:
            metrics["comm/bytes_per_step"] = self._sent / self._steps
            self._sent, self._steps = 0, 0
        return metrics


def effective_weights(jacobian: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """The least-squares coefficients w of ``direction`` on the rows of ``jacobian`` (d ≈ wᵀJ): a task weight for
    aggregators that do not form the update as a weighted sum."""
    return torch.linalg.pinv(jacobian @ jacobian.T) @ (jacobian @ direction)


def union_means(rows: torch.Tensor, counts: torch.Tensor, comm: Collectives, own: list[torch.Tensor] = (),
                weight_rows: bool = True) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """The union batch's task means from each rank's: ``rows`` (K × P, one per task) and the task-own gradients ``own``
    (one per task, any size), each rank's multiplied by its K sample ``counts``, summed across ranks with the counts in
    one all-reduce and divided by the global counts. Returns the rows, the own gradients and the bytes sent. With
    ``weight_rows`` False the rows are summed as they are (the caller divides by the world size). A no-op in a single
    process."""
    if comm.world_size == 1:
        return rows, list(own), 0
    scaled = rows * counts[:, None] if weight_rows else rows
    payload = torch.cat([scaled.flatten(), *(g * n for g, n in zip(own, counts)), counts])
    comm.all_reduce_sum(payload)
    total = payload[-len(counts):].clamp(min=1)
    reduced = payload[: rows.numel()].view_as(rows)
    if weight_rows:
        reduced = reduced / total[:, None]
    sizes = [g.numel() for g in own]
    parts = payload[rows.numel(): rows.numel() + sum(sizes)].split(sizes)
    return reduced, [part / n for part, n in zip(parts, total)], payload.numel() * payload.element_size()


def flat_gradients(grads: tuple[torch.Tensor | None, ...], params: list[torch.nn.Parameter], device: torch.device,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The gradients as one flat vector of ``dtype`` (zeros where a parameter got none)."""
    parts = [(g if g is not None else torch.zeros_like(p)).flatten().to(dtype) for g, p in zip(grads, params)]
    return torch.cat(parts) if parts else torch.zeros(0, device=device, dtype=dtype)


def _write(flat: torch.Tensor, params: list[torch.nn.Parameter]) -> None:
    """Set each parameter's ``.grad`` from its slice of ``flat``."""
    offset = 0
    for p in params:
        p.grad = flat[offset: offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
