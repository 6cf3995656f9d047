"""Task affinity measured during training, exact under DDP: TAG's lookahead affinity and the gradient cosine.

Every ``train.affinity_every`` optimizer steps (a function of the global step, so the same steps on every rank), on
the batch just drawn and before the optimizer steps:

1. each task's gradient of its batch-mean loss (unweighted) with respect to the parameters several tasks' losses
   reach (:func:`~distmtl.weighting.split_parameters`), one ``torch.autograd.grad`` per task on the unwrapped model,
   nothing written to ``.grad``. A model with identical task branches (Selective Sharing) adds the task's branch,
   in the branches' common layout (:meth:`~distmtl.models.MultiTaskModel.aligned_parameters`);
2. the K gradients are all-reduced count-weighted, as ``weighting.reduction: exact`` does, so every rank holds the
   gradients of the union of all ranks' batches; their pairwise cosine is the ``cosine`` signal;
3. for each task i, the step the run's optimizer would take on those parameters from task i's gradient alone: an
   optimizer of the run's class over copies of the parameters, each group's hyperparameters at this step's
   learning rate, a copy of the real optimizer's state (Adam's moments and step count), one ``step()``. The model is
   evaluated on the same batch at θ and at θ + Δᵢ (``torch.func.functional_call``: the model, its buffers and
   ``.grad`` stay as they are; every evaluation draws the same dropout masks; batch-norm uses the batch's statistics,
   per rank as in training). Δᵢ moves the shared parameters and, with identical branches, every branch by task i's
   branch step (tasks on other branches: would task i's update help them). Each task's loss is summed with its
   count, all-reduced, and TAG's lookahead affinity taken on the union batch:
   Z(i→j) = 1 − L_j(θ + Δᵢ) / L_j(θ) (``lookahead``).
   A stateful optimizer moves the parameters even on a zero gradient (Adam's momentum: with β₁ = 0.9 most of Δᵢ is
   the drift Δ∅ shared by every task), which adds the same amount to every row of a column; ``lookahead_net`` takes
   it out: (L_j(θ + Δ∅) − L_j(θ + Δᵢ)) / L_j(θ), the change of task j's loss that task i's gradient causes.

So the K × K matrices are the same on every rank and equal those of one process on the union batch (to float
tolerance). Beyond the K × K losses, what is reduced is the K task gradients (K × the shared parameters, what the
exact gradient methods send every step): the lookahead of task i on the union batch needs task i's union-batch
gradient, which no reduction of per-rank matrices gives. Each epoch the matrices are averaged over its measurements
and rank 0's mean is broadcast. The RNG streams, the model and the optimizer are untouched: training follows the
same trajectory with and without the measurement; only time is spent, reported as ``affinity/overhead`` (probe
seconds over the rest of the epoch's training seconds).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from distmtl.config.schema import Config
from distmtl.engine.context import DistContext
from distmtl.engine.schedule import BASE_LR
from distmtl.models import MultiTaskModel
from distmtl.weighting import split_parameters
from distmtl.weighting.aggregation import flat_gradients, union_means

#: The signals, in the order their matrices are kept: TAG's lookahead, the lookahead net of the optimizer's drift,
#: and the gradient cosine.
SIGNALS = ("lookahead", "lookahead_net", "cosine")
#: What a probe reads from a batch: each task's (loss total, target count) from the model's outputs.
LossTerms = Callable[[dict[str, torch.Tensor]], dict[str, tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class ParameterPlan:
    """Which parameters one task's lookahead step moves: ``shared`` (reached by several tasks, not in a branch),
    each task's ``aligned`` branch parameters (one layout for every task), and the distinct branches (each in that
    layout) that receive a task's branch step."""

    shared: list[nn.Parameter]
    aligned: dict[str, list[nn.Parameter]]
    branches: list[list[nn.Parameter]]

    def of(self, task: str) -> list[nn.Parameter]:
        return [*self.shared, *self.aligned.get(task, [])]


def parameter_plan(model: MultiTaskModel, tasks: list[str], image_shape: tuple[int, ...],
                   device: torch.device) -> ParameterPlan:
    """The plan for ``model`` as it is now (found again after a change of its structure)."""
    aligned = {t: list(model.aligned_parameters(t)) for t in tasks}
    in_branch = {id(p) for params in aligned.values() for p in params}
    shared = [p for p in split_parameters(model, tasks, image_shape, device).shared if id(p) not in in_branch]
    branches: dict[int, list[nn.Parameter]] = {}
    for params in aligned.values():
        if params:
            branches.setdefault(id(params[0]), params)
    return ParameterPlan(shared, {t: p for t, p in aligned.items() if p}, list(branches.values()))


def lookahead_step(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], gradient: torch.Tensor,
                   lr_factor: float) -> list[torch.Tensor]:
    """The change ``optimizer``'s rule would make to ``params`` from the flat ``gradient`` alone, at the learning rate
    of ``lr_factor`` × each group's base rate and from a copy of its current state; nothing of ``optimizer`` or
    ``params`` changes."""
    copies = [p.detach().clone() for p in params]
    offset = 0
    for c in copies:
        c.grad = gradient[offset: offset + c.numel()].view_as(c).to(c.dtype).clone()
        offset += c.numel()
    copy_of = {id(p): c for p, c in zip(params, copies)}
    groups = []
    for group in optimizer.param_groups:
        members = [copy_of[id(p)] for p in group["params"] if id(p) in copy_of]
        if members:
            settings = {k: v for k, v in group.items() if k != "params"}
            settings["lr"] = group.get(BASE_LR, group["lr"]) * lr_factor
            groups.append({**settings, "params": members})
    temporary = type(optimizer)(groups)
    for p, c in zip(params, copies):
        if p in optimizer.state:
            temporary.state[c] = copy.deepcopy(optimizer.state[p])
    temporary.step()
    return [c.detach() - p.detach() for c, p in zip(copies, params)]


class AffinityProbe:
    """Measures the K × K lookahead affinity and gradient cosine every ``every`` steps; keeps this epoch's and the
    run's means (``[signal][i][j]``: task i's gradient or step, task j's loss)."""

    def __init__(self, model: MultiTaskModel, tasks: list[str], every: int, image_shape: tuple[int, ...],
                 comm: DistContext, seed: int, autocast: AbstractContextManager | None = None) -> None:
        self.model, self.tasks, self.every = model, list(tasks), every
        self.image_shape, self.comm, self.seed = image_shape, comm, seed
        self.autocast = autocast or nullcontext()
        self._plan: ParameterPlan | None = None
        self._structure: dict | None = None
        k = len(self.tasks)
        self._epoch_sum = torch.zeros(len(SIGNALS), k, k, dtype=torch.float64)
        self._epoch_count = 0
        self._epoch_seconds = 0.0
        self.run_sum = torch.zeros(len(SIGNALS), k, k, dtype=torch.float64)
        self.run_count = 0
        self.run_seconds = 0.0
        self.run_train_seconds = 0.0
        self.epoch_mean: torch.Tensor | None = None  # the last measured epoch's mean (signals × K × K), ranks alike
        self.enabled = True  # a controller that alone asks for the measurements turns them off once it has decided

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    def observe(self, step: int, losses: dict[str, torch.Tensor], counts: dict[str, torch.Tensor],
                images: torch.Tensor, loss_terms: LossTerms, optimizer: torch.optim.Optimizer,
                lr_factor: float) -> None:
        """Measure at ``step`` if it is due; ``losses`` still hold their graph (retained for the training step)."""
        if not self.due(step):
            return
        started = time.perf_counter()
        matrices = self.measure(step, losses, counts, images, loss_terms, optimizer, lr_factor)
        self._epoch_sum += matrices.cpu()
        self._epoch_count += 1
        self._epoch_seconds += time.perf_counter() - started

    def measure(self, step: int, losses: dict[str, torch.Tensor], counts: dict[str, torch.Tensor],
                images: torch.Tensor, loss_terms: LossTerms, optimizer: torch.optim.Optimizer,
                lr_factor: float) -> torch.Tensor:
        """The :data:`SIGNALS` matrices of this batch on the union of every rank's batch (3 × K × K, float64)."""
        plan = self.plan()
        count_row = torch.stack([counts[t] for t in self.tasks]).double()
        gradients = self.task_gradients(losses, plan, count_row)
        norms = gradients.norm(dim=1).clamp(min=torch.finfo(gradients.dtype).tiny)
        cosine = (gradients @ gradients.T) / (norms[:, None] * norms[None, :])
        lookahead, net = self.lookahead(step, gradients, plan, images, loss_terms, optimizer, lr_factor)
        return torch.stack([lookahead, net, cosine.cpu()])

    def task_gradients(self, losses: dict[str, torch.Tensor], plan: ParameterPlan,
                       counts: torch.Tensor) -> torch.Tensor:
        """K × P: each task's union-batch gradient over the shared parameters and its own branch (every task's branch
        has the same layout, so the rows line up)."""
        rows = []
        for task in self.tasks:
            params = plan.of(task)
            grads = torch.autograd.grad(losses[task], params, retain_graph=True, allow_unused=True) if params else ()
            rows.append(flat_gradients(grads, params, losses[task].device, torch.float64))
        rows_local = torch.stack(rows)
        reduced, _, _ = union_means(rows_local, counts.to(rows_local.device), self.comm)
        return reduced

    def lookahead(self, step: int, gradients: torch.Tensor, plan: ParameterPlan, images: torch.Tensor,
                  loss_terms: LossTerms, optimizer: torch.optim.Optimizer,
                  lr_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Z(i→j) = 1 − L_j(θ + Δᵢ)/L_j(θ) on the union batch, and the same net of the drift Δ∅ (the optimizer's step
        from a zero gradient: what its state alone moves, e.g. Adam's momentum): (L_j(θ + Δ∅) − L_j(θ + Δᵢ))/L_j(θ).
        Two K × K float64 matrices."""
        k = len(self.tasks)
        totals = torch.zeros(k + 2, k, dtype=torch.float64, device=images.device)  # at θ, after Δ∅, after each Δᵢ
        counts = torch.zeros(k, dtype=torch.float64, device=images.device)
        base = self._evaluate(step, images, loss_terms, {})
        for j, task in enumerate(self.tasks):
            totals[0, j], counts[j] = base[task][0].double(), base[task][1].double()
        everything = [*plan.shared, *(p for branch in plan.branches for p in branch)]
        zero = gradients.new_zeros(sum(p.numel() for p in everything))
        drift = lookahead_step(optimizer, everything, zero, lr_factor)
        rows = [(1, dict(zip(map(id, everything), drift)))]
        for i, task in enumerate(self.tasks):
            params = plan.of(task)
            deltas = lookahead_step(optimizer, params, gradients[i], lr_factor) if params else []
            moved = dict(zip(map(id, plan.shared), deltas[: len(plan.shared)]))
            for branch in plan.branches:  # task i's branch step, applied to every branch
                moved.update(zip(map(id, branch), deltas[len(plan.shared):]))
            rows.append((i + 2, moved))
        for row, moved in rows:
            after = self._evaluate(step, images, loss_terms, moved) if moved else base
            for j, other in enumerate(self.tasks):
                totals[row, j] = after[other][0].double()
        payload = torch.cat([totals.flatten(), counts])
        self.comm.all_reduce_sum(payload)
        totals = payload[: totals.numel()].view_as(totals).cpu()
        before = totals[0]
        scale = torch.where(before > 0, before, torch.ones_like(before))
        lookahead = torch.where(before > 0, 1.0 - totals[2:] / scale, torch.zeros_like(scale))
        net = torch.where(before > 0, (totals[1] - totals[2:]) / scale, torch.zeros_like(scale))
        return lookahead, net

    def _evaluate(self, step: int, images: torch.Tensor, loss_terms: LossTerms,
                  moved: dict[int, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each task's (loss total, count) on ``images`` with the parameters in ``moved`` (by id) shifted by their
        delta; buffers are copies and the RNG is seeded alike for every evaluation of this step."""
        state = {name: (p.detach() + moved[id(p)] if id(p) in moved else p.detach())
                 for name, p in self.model.named_parameters()}
        state.update({name: b.clone() for name, b in self.model.named_buffers()})
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices), self.autocast:
            torch.manual_seed((self.seed * 1_000_003 + step) % (2**63))
            outputs = functional_call(self.model, state, (images,))
            return loss_terms(outputs)

    def plan(self) -> ParameterPlan:
        """The parameter plan, found again when the model's structure changed (a Selective Sharing merge)."""
        structure = self.model.structure()
        if self._plan is None or structure != self._structure:
            device = next(self.model.parameters()).device
            self._plan = parameter_plan(self.model, self.tasks, self.image_shape, device)
            self._structure = copy.deepcopy(structure)
        return self._plan

    def end_epoch(self, train_seconds: float) -> dict[str, float]:
        """Close the epoch: its mean matrices (rank 0's, broadcast) join the run's; returns the epoch's metrics:
        measurements, probe seconds, overhead, and the run's mean matrices as ``affinity/<signal>/<i>/<j>``."""
        mean = self._epoch_sum / max(1, self._epoch_count)
        mean = self.comm.broadcast(mean.to(self.comm.device)).cpu()
        if self._epoch_count:
            self.epoch_mean = mean
            self.run_sum += self._epoch_sum
            self.run_count += self._epoch_count
        self.run_seconds += self._epoch_seconds
        self.run_train_seconds += train_seconds
        metrics = {"affinity/measurements": float(self._epoch_count), "affinity/seconds": self._epoch_seconds,
                   "affinity/overhead": _overhead(self._epoch_seconds, train_seconds),
                   "affinity/run_overhead": _overhead(self.run_seconds, self.run_train_seconds)}
        run_mean = self.run_mean()
        for s, signal in enumerate(SIGNALS):
            for i, a in enumerate(self.tasks):
                for j, b in enumerate(self.tasks):
                    metrics[f"affinity/{signal}/{a}/{b}"] = float(run_mean[s, i, j])
        self._epoch_sum.zero_()
        self._epoch_count, self._epoch_seconds = 0, 0.0
        return metrics

    def run_mean(self) -> torch.Tensor:
        """The mean over every measurement of the run so far (signals × K × K); the broadcast epoch means keep it
        the same on every rank."""
        return self.run_sum / max(1, self.run_count)

    def record(self) -> dict[str, dict]:
        """The epoch's and the run's matrices as a checkpoint record (``task_affinity``, drawn as a heat map)."""
        if self.epoch_mean is None:
            return {}
        run_mean = self.run_mean()
        return {"task_affinity": {"tasks": self.tasks, "every": self.every, "measurements": self.run_count,
                                  **{signal: self.epoch_mean[s].tolist() for s, signal in enumerate(SIGNALS)},
                                  **{f"run_{signal}": run_mean[s].tolist() for s, signal in enumerate(SIGNALS)}}}

    def state_dict(self) -> dict:
        return {"run_sum": self.run_sum.clone(), "run_count": self.run_count, "run_seconds": self.run_seconds,
                "run_train_seconds": self.run_train_seconds}

    def load_state_dict(self, state: dict) -> None:
        self.run_sum = state["run_sum"].clone()
        self.run_count, self.run_seconds = state["run_count"], state["run_seconds"]
        self.run_train_seconds = state["run_train_seconds"]


def _overhead(probe_seconds: float, train_seconds: float) -> float:
    """Probe time as a fraction of the training time without it."""
    rest = train_seconds - probe_seconds
    return probe_seconds / rest if rest > 0 else 0.0


def matrix_from_metrics(metrics: dict[str, float], tasks: list[str], signal: str) -> list[list[float]]:
    """A run's mean ``signal`` matrix from its reported metrics (``affinity/<signal>/<i>/<j>``)."""
    return [[metrics[f"affinity/{signal}/{a}/{b}"] for b in tasks] for a in tasks]



def build_probe(config: Config, model: MultiTaskModel, controller: object, image_shape: tuple[int, ...],
                ctx: DistContext, autocast: AbstractContextManager | None = None) -> AffinityProbe | None:
    """The run's probe, measuring every ``train.affinity_every`` steps, or as often as a structure controller that
    reads affinity asks (its ``affinity_every``; Selective Sharing's ``affinity`` criterion) when that is 0; the
    controller then gets the probe (``use_affinity``). None when nothing measures."""
    every = config.train.affinity_every or getattr(controller, "affinity_every", 0)
    if not every:
        return None
    probe = AffinityProbe(model, list(config.tasks), every, tuple(image_shape), ctx, config.train.seed, autocast)
    if getattr(controller, "affinity_every", 0):
        controller.use_affinity(probe, owned=not config.train.affinity_every)
    return probe
