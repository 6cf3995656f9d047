"""Time per training step of every weighting method relative to ``fixed``, at K = 3 and K = 10 tasks, with 1 and 2
workers, the bytes each communicates per step, and how far two ranks are from one process on the union batch.

Each method trains the engine's ``Trainer`` (hard sharing) for one epoch per round; its ``train/step_ms`` is
divided by that of ``fixed`` in the same round, and the table gives the median ratio over the rounds (rounds
alternate the methods, so the machine's drift hits all alike). K = 3: the generator's fine, colour and shape
tasks; K = 10: digits as ten one-vs-all tasks. With 2 workers the ranks are two gloo processes; bytes per step count
everything the step sends: DDP's gradient buckets (a communication hook counts them) and distmtl's own collectives
(the gradient-level reduction, FAMO's and GradNorm's loss and gradient reductions, buffer broadcasts). Exactness:
:mod:`distmtl.weighting.exactness` (3 Adam steps, 2 ranks against one process on whole batches).

    python scripts/bench_weightings.py [--quick] [--rounds 3] [--threads 1] [--methods m1,m2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
from pathlib import Path

import torch
import torch.multiprocessing as mp
from tabulate import tabulate

from distmtl.config import load_config
from distmtl.engine import DistContext, LocalReporter, Trainer
from distmtl.machine import describe
from distmtl.weighting import WEIGHTINGS, exactness

CONFIGS = Path(__file__).resolve().parents[1] / "search_spaces" / "configs"
PROBLEMS = {
    3: (CONFIGS / "weightings.yaml", {"tasks": ["fine", "colour", "shape"], "data.num_samples": 1200}),
    10: (CONFIGS / "digits_one_vs_all.yaml", {"model": {"architecture": "hard_sharing", "channels": [32, 64],
                                                        "bottleneck": 128, "dropout": 0.1}}),
}
QUICK = {"data.num_samples": 400, "data.image_size": 16, "data.batch_size": 32}


class CountingContext(DistContext):
    """The engine's collectives, counting the bytes of every all-reduce and broadcast."""

    sent = 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        CountingContext.sent += tensor.numel() * tensor.element_size()
        return super().all_reduce_sum(tensor)

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        CountingContext.sent += tensor.numel() * tensor.element_size()
        return super().broadcast(tensor)


def counting_hook(state: None, bucket):  # unannotated: DDP rejects a string return annotation
    """DDP's default all-reduce, counting each bucket's bytes."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    CountingContext.sent += bucket.buffer().numel() * bucket.buffer().element_size()
    return allreduce_hook(None, bucket)


def config_for(k: int, method: str, quick: bool):
    path, overrides = PROBLEMS[k]
    return load_config(path, {**overrides, **(QUICK if quick else {}), "optim.epochs": 1, "weighting.method": method,
                              "train.device": "cpu"})


def one_epoch(k: int, method: str, quick: bool, ctx: DistContext) -> tuple[float, float]:
    """(ms per training step, bytes sent per step) of one epoch of ``method``."""
    trainer = Trainer(config_for(k, method, quick), LocalReporter(), ctx)
    if isinstance(trainer.net, torch.nn.parallel.DistributedDataParallel):
        trainer.net.register_comm_hook(None, counting_hook)
    CountingContext.sent = 0
    final = trainer.fit()
    return final["train/step_ms"], CountingContext.sent / max(1, len(trainer.loaders.train))


def rounds_of(k: int, methods: list[str], args: argparse.Namespace,
              ctx: DistContext) -> dict[str, list[tuple[float, float]]]:
    found: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    for _ in range(args.rounds):
        for method in methods:
            found[method].append(one_epoch(k, method, args.quick, ctx))
    return found


def _rank(rank: int, port: int, k: int, methods: list[str], args: argparse.Namespace, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(args.threads)
    found = rounds_of(k, methods, args, CountingContext(rank, 2, torch.device("cpu")))
    if rank == 0:
        results.update(found)
    torch.distributed.destroy_process_group()


def measure(k: int, workers: int, methods: list[str], args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    if workers == 1:
        return rounds_of(k, methods, args, CountingContext())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(port, k, methods, args, results), nprocs=2, join=True)
        return dict(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small images and data (a few minutes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",") if args.methods else sorted(WEIGHTINGS)
    methods = ["fixed", *(m for m in methods if m != "fixed")]
    rows, ratios = [], {}
    for k in PROBLEMS:
        for workers in (1, 2):
            found = measure(k, workers, methods, args)
            base = [ms for ms, _ in found["fixed"]]
            for method in methods:
                ratio = statistics.median(ms / b for (ms, _), b in zip(found[method], base))
                ratios[(k, workers, method)] = ratio
                rows.append([k, workers, method, WEIGHTINGS.get(method).kind,
                             f"{statistics.median(ms for ms, _ in found[method]):.1f}", f"{ratio:.2f}",
                             f"{statistics.median(sent for _, sent in found[method]) / 1024:.1f}"
                             if workers > 1 else ""])
            print(f"K = {k}, {workers} worker(s) measured", flush=True)
    gaps = exactness.measure(methods)
    print(f"\nMachine: {describe(torch.device('cpu'))}; {args.rounds} round(s), "
          f"{'quick' if args.quick else 'full'} size\n")
    print(tabulate(rows, headers=["K", "workers", "method", "kind", "ms / step", "× fixed", "KiB sent / step"],
                   tablefmt="github", disable_numparse=True))
    exact = {m: gap for m, (gap, _) in gaps.items() if m != "graddrop"}
    print("\n" + tabulate([[m, f"{gap:.1e}", same] for m, (gap, same) in gaps.items()],
                          headers=["method", "max \\|2 ranks − union\\|", "ranks identical"], tablefmt="github",
                          disable_numparse=True))
    print(json.dumps({"methods": len(methods), "max_step_ratio_k3": round(max(ratios[(3, 1, m)] for m in methods), 3),
                      "ddp_exact_max_abs_diff": max(exact.values())}))


if __name__ == "__main__":
    main()
