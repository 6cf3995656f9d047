"""The weighting contract and registry (the methods register themselves in their modules).

A weighting turns a batch's per-task losses into the gradients the optimizer steps on. Loss-level methods
(``fixed``, ``dwa``, ``uncertainty``, ``rlw``, ``famo``, ``gradnorm``) combine the losses into one scalar whose
``backward()`` runs through DDP as usual; gradient-level methods (:mod:`distmtl.weighting.aggregation`) compute
each task's gradient of the shared parameters and aggregate them, doing their own cross-rank reduction. Both
kinds implement :meth:`Weighting.backward`, so the trainer never needs to know which kind it runs.

A weighting is an ``nn.Module`` so that it moves with the model (``.to(device)``): a learned method's parameters and
buffers live on the training device, and its state travels in checkpoints through the usual ``state_dict``. Every
method multiplies the static per-task weights of the config (λ; 1 where unset) by its own factors. State beyond
parameters and buffers (a solver's last weights, an inner optimizer's moments) goes through ``nn.Module``'s
``get_extra_state``/``set_extra_state`` as plain numbers, lists and tensors, so that a checkpoint still loads with
``weights_only=True``. Epoch-level methods (``fixed``, ``dwa``) change factors only at epoch boundaries, from
epoch-mean *unweighted* training losses that the engine has already all-reduced across ranks, so every rank holds
the same weights without communication. Per-step methods draw their randomness from a generator seeded alike on
every rank (:meth:`Step.generator_seed`) and reduce what they measure across ranks before they decide, so every rank
applies the same update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from distmtl.config.schema import WEIGHTING, WeightingConfig
from distmtl.registry import Registry

WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting method", "weighting.method", WEIGHTING)


class Collectives(Protocol):
    """The cross-rank operations a weighting may use (the engine's ``DistContext`` provides them)."""

    world_size: int

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` in place over all ranks."""


@dataclass
class ParameterSplit:
    """Which parameters each task's loss reaches: ``shared`` by more than one task, ``own[task]`` by that task
    alone (parameters no task reaches appear in neither)."""

    shared: list[nn.Parameter]
    own: dict[str, list[nn.Parameter]]


@dataclass
class Step:
    """What a weighting's backward pass may use besides the losses: the (unwrapped) model and how its parameters
    split, each task's number of samples with a target in this rank's batch, the collectives, the global step
    and run seed, and a way to evaluate the per-task losses of this batch again after the optimizer step."""

    model: nn.Module
    split: ParameterSplit
    counts: dict[str, torch.Tensor]
    comm: Collectives
    index: int
    seed: int
    losses_again: Callable[[], dict[str, torch.Tensor]] = field(default=lambda: {})

    def generator_seed(self) -> int:
        """A seed that every rank derives alike for this step (for methods that draw random numbers)."""
        return (self.seed * 1_000_003 + self.index) % (2**63)

    def union_means(self, losses: dict[str, torch.Tensor], tasks: list[str]) -> torch.Tensor:
        """Each task's mean loss over the union of every rank's batch (detached; one all-reduce of 2·K numbers)."""
        counts = torch.stack([self.counts[t] for t in tasks]).double()
        means = torch.stack([losses[t].detach() for t in tasks]).double()
        if self.comm.world_size == 1:
            return means
        payload = self.comm.all_reduce_sum(torch.cat([means * counts, counts]))
        return payload[: len(tasks)] / payload[len(tasks):].clamp(min=1)


@WEIGHTINGS.register("fixed", default=True)
class Weighting(nn.Module):
    """Base method: static weights only (``fixed``).

    ``kind`` is ``loss`` or ``gradient`` (what the method acts on); ``reduces_gradients`` says that the method
    all-reduces every gradient itself, so the engine must not wrap the model in DDP; ``optimised_with_model``
    that the method's parameters (if any) join the model's optimizer; ``uses_split`` that its steps read
    :attr:`Step.split` (which the engine then computes).
    """

    kind = "loss"
    reduces_gradients = False
    optimised_with_model = True
    uses_split = False

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.static = {t: cfg.weights.get(t, 1.0) for t in self.tasks}

    def factors(self) -> dict[str, float]:
        """The method's dynamic factor per task for the current epoch."""
        return {t: 1.0 for t in self.tasks}

    def weights(self) -> dict[str, float]:
        """Weight per task for the current epoch: static weight × dynamic factor."""
        factors = self.factors()
        return {t: self.static[t] * factors[t] for t in self.tasks}

    def combine(self, losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
        """One scalar from this batch's per-task losses, given this epoch's ``weights()``."""
        return sum(weights[t] * loss for t, loss in losses.items())

    def backward(self, losses: dict[str, torch.Tensor], weights: dict[str, float], step: Step) -> torch.Tensor:
        """Fill the ``.grad`` of every trained parameter from this batch's ``losses``; return the scalar the
        divergence guard watches. Loss-level default: ``combine`` and one ``backward()`` (through DDP, which
        averages the model's gradients), then this method's own parameters' gradients averaged across ranks."""
        loss = self.combine(losses, weights)
        loss.backward()
        if step.comm.world_size > 1:
            for p in self.parameters():
                if p.grad is not None:
                    step.comm.all_reduce_sum(p.grad).div_(step.comm.world_size)
        return loss

    def check(self, model: nn.Module, image_shape: tuple[int, ...]) -> None:
        """Raise :class:`~distmtl.errors.ConfigError` (one line) if this method cannot train ``model``."""

    def after_step(self, step: Step) -> None:
        """Called after the optimizer step (e.g. to update a method's own state from the new losses)."""

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Record this epoch's mean unweighted training loss per task (identical on all ranks)."""

    def epoch_metrics(self) -> dict[str, float]:
        """Metrics of the epoch just trained (e.g. ``weight/<task>``: the mean per-step weights of a method whose
        weights change every step); called once per epoch, after its last step."""
        return {}


class WeightAverage:
    """The mean of per-step task weights over an epoch, kept on the device (no host sync per step)."""

    def __init__(self, tasks: list[str]) -> None:
        self.tasks = tasks
        self.total: torch.Tensor | None = None
        self.steps = 0

    def add(self, weights: torch.Tensor) -> None:
        weights = weights.detach().double()
        self.total = weights if self.total is None else self.total + weights
        self.steps += 1

    def metrics(self) -> dict[str, float]:
        """``weight/<task>`` means since the last call; empty when no step was added."""
        if self.total is None:
            return {}
        means = (self.total / self.steps).tolist()
        self.total, self.steps = None, 0
        return {f"weight/{t}": w for t, w in zip(self.tasks, means)}


def build_weighting(cfg: WeightingConfig, tasks: list[str]) -> Weighting:
    """Instantiate the configured method."""
    return WEIGHTINGS.get(cfg.method)(cfg, tasks)
