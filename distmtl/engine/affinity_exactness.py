"""How far the affinity matrices of N gloo ranks are from one process on the union of their batches.

A small multi-task regression (a shared trunk, one head per task, no batch norm or dropout) takes a few Adam steps
with a :class:`~distmtl.engine.affinity.AffinityProbe` measuring at every step; every rank sees its share of each
batch, and one task lacks targets on some samples (so the count weighting matters). The same steps then run in one
process on whole batches. The measurement is exact when both give the same matrices to float tolerance, and
consistent when every rank holds identical ones.

    python -m distmtl.engine.affinity_exactness
"""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp
from torch import nn

from distmtl.engine.affinity import AffinityProbe
from distmtl.engine.context import DistContext
from distmtl.models import MultiTaskModel

TASKS = ["a", "b", "c"]
BATCH, FEATURES, STEPS = 8, 6, 3


class TinyModel(MultiTaskModel):
    """A shared tanh trunk and one linear head per task."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.task_names = list(TASKS)
        self.trunk = nn.Sequential(nn.Linear(FEATURES, 8), nn.Tanh())
        self.heads = nn.ModuleDict({t: nn.Linear(8, 1) for t in TASKS})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(x)
        return {t: head(z).squeeze(1) for t, head in self.heads.items()}


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


def loss_terms(outputs, targets, masks) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each task's squared-error total over its masked samples, and their count."""
    return {t: (((outputs[t] - targets[t]) ** 2)[masks[t]].sum(), masks[t].sum()) for t in TASKS}


def measured(ctx: DistContext, rows: slice) -> list[torch.Tensor]:
    """Each step's (lookahead, cosine) matrices, measured on the ``rows`` of every batch while the model trains with
    Adam on the union-batch gradient (the trunk's gradients summed count-weighted by hand, as DDP would average)."""
    model = TinyModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    probe = AffinityProbe(model, TASKS, every=1, image_shape=(FEATURES,), comm=ctx, seed=3)
    found = []
    for index, (x, targets, masks) in enumerate(batches()):
        x, targets, masks = x[rows], {t: v[rows] for t, v in targets.items()}, {t: m[rows] for t, m in masks.items()}
        terms = loss_terms(model(x), targets, masks)
        losses = {t: total / count.clamp(min=1) for t, (total, count) in terms.items()}
        counts = {t: count for t, (_, count) in terms.items()}
        found.append(probe.measure(index, losses, counts, x,
                                   lambda out, tg=targets, m=masks: loss_terms(out, tg, m), optimizer, 1.0))
        optimizer.zero_grad(set_to_none=True)
        total = torch.stack([counts[t] for t in TASKS]).double()
        ctx.all_reduce_sum(total)
        sum(losses[t] * counts[t] / total[i].clamp(min=1) for i, t in enumerate(TASKS)).backward()
        for p in model.parameters():
            ctx.all_reduce_sum(p.grad)
        optimizer.step()
    return found


def measure(world_size: int = 2) -> tuple[float, bool]:
    """(largest absolute difference between rank 0's matrices and the union-batch process's, whether every rank
    measured identical matrices)."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(_free_port(), world_size, results), nprocs=world_size, join=True)
        ranks = dict(results)
    union = measured(DistContext(), slice(0, BATCH))
    gap = max((a - b).abs().max().item() for a, b in zip(ranks[0], union))
    same = all(all(torch.equal(a, b) for a, b in zip(ranks[0], ranks[r])) for r in range(world_size))
    return gap, same


def _rank(rank: int, port: int, world_size: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    share = BATCH // world_size
    results[rank] = measured(DistContext(rank, world_size), slice(rank * share, (rank + 1) * share))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    gap, same = measure()
    print(f"max |rank 0 − union batch| over the affinity matrices {gap:.2e}   ranks identical: {same}")
