"""How far N gloo ranks are from one process on the union of their batches, for any registered weighting method.

A small multi-task regression (a shared linear trunk, one linear head per task, no batch norm) trains a few Adam
steps the way the engine does: DDP around the model for loss-level methods, the method's own reduction for
gradient-level ones; every rank sees its share of each batch, and one task lacks targets on some samples (for the
methods whose reduction is count-weighted). The same steps then run in one process on whole batches. A method is
exact when both give the same parameters to float tolerance, and consistent when all ranks agree bit for bit.

    python -m distmtl.weighting.exactness [METHOD ...]      # every registered method by default
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable

import torch
import torch.multiprocessing as mp
from torch import nn

from distmtl.config.schema import WEIGHTING
from distmtl.weighting.base import WEIGHTINGS, Collectives, Step, build_weighting
from distmtl.weighting.reach import split_parameters

TASKS = ["a", "b", "c"]
BATCH, FEATURES, STEPS = 8, 6, 3


class TinyModel(nn.Module):
    """A shared linear trunk and one linear head per task."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(FEATURES, 8), nn.Tanh())
        self.heads = nn.ModuleDict({t: nn.Linear(8, 1) for t in TASKS})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(x)
        return {t: head(z).squeeze(1) for t, head in self.heads.items()}


class Single:
    """The collectives of a single process."""

    world_size = 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


class Gloo:
    """The collectives of an initialised gloo process group."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        torch.distributed.all_reduce(tensor)
        return tensor


def batches() -> list[tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """The steps' batches; task ``b`` has targets on 5 of every 8 samples."""
    generator = torch.Generator().manual_seed(1)
    found = []
    for _ in range(STEPS):
        x = torch.randn(BATCH, FEATURES, generator=generator)
        targets = {"a": x[:, 0] - x[:, 1], "b": 2.0 * x[:, 2], "c": 0.5 * x[:, 4] - x[:, 3]}
        masks = {t: torch.ones(BATCH, dtype=torch.bool) for t in TASKS}
        masks["b"] = torch.tensor([True, False, True, True, False, True, False, True])
        found.append((x, targets, masks))
    return found


def train_steps(method: str, comm: Collectives, rows: slice) -> list[torch.Tensor]:
    """The parameters after :data:`STEPS` steps of ``method`` on the ``rows`` of every batch."""
    model = TinyModel()
    weighting = build_weighting(WEIGHTING.of(method=method, weights={"c": 0.5}), TASKS)
    reach = split_parameters(model, TASKS, (FEATURES,), torch.device("cpu"))
    ddp = comm.world_size > 1 and not weighting.reduces_gradients
    net = nn.parallel.DistributedDataParallel(model) if ddp else model
    extra = list(weighting.parameters()) if weighting.optimised_with_model else []
    optimizer = torch.optim.Adam([*model.parameters(), *extra], lr=0.05)
    masked = weighting.reduces_gradients  # DDP averages batch means: exact only when every sample has every target
    for index, (x, targets, masks) in enumerate(batches()):
        x, targets = x[rows], {t: v[rows] for t, v in targets.items()}
        masks = {t: (m if masked else torch.ones_like(m))[rows] for t, m in masks.items()}
        losses, counts = _losses(net(x), targets, masks)
        optimizer.zero_grad(set_to_none=True)
        step = Step(model, reach, counts, comm, index, 3, _again(net, x, targets, masks))
        weighting.backward(losses, weighting.weights(), step)
        optimizer.step()
        weighting.after_step(step)
    return [p.detach().clone() for p in model.parameters()]


def measure(methods: list[str], world_size: int = 2) -> dict[str, tuple[float, bool]]:
    """Per method: (largest absolute parameter difference between rank 0 and the union-batch process, whether every
    rank ended with identical parameters)."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(_free_port(), world_size, methods, results), nprocs=world_size, join=True)
        ranks = dict(results)
    found = {}
    for method in methods:
        union = train_steps(method, Single(), slice(0, BATCH))
        first = ranks[(0, method)]
        gap = max((a - b).abs().max().item() for a, b in zip(first, union))
        same = all(all(torch.equal(a, b) for a, b in zip(first, ranks[(r, method)])) for r in range(world_size))
        found[method] = (gap, same)
    return found


def _losses(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]):
    terms = {t: (((outputs[t] - targets[t]) ** 2)[masks[t]].sum(), masks[t].sum()) for t in TASKS}
    return {t: total / count.clamp(min=1) for t, (total, count) in terms.items()}, {t: c for t, (_, c) in terms.items()}


def _again(net: nn.Module, x: torch.Tensor, targets, masks) -> Callable[[], dict[str, torch.Tensor]]:
    return lambda: _losses(net(x), targets, masks)[0]


def _rank(rank: int, port: int, world_size: int, methods: list[str], results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    share = BATCH // world_size
    for method in methods:
        results[(rank, method)] = train_steps(method, Gloo(world_size), slice(rank * share, (rank + 1) * share))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    chosen = sys.argv[1:] or list(WEIGHTINGS)
    for name, (gap, same) in measure(chosen).items():
        print(f"{name:<12} max |rank 0 − union| {gap:.2e}   ranks identical: {same}")
