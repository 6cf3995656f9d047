"""The per-epoch cost of Selective Sharing's decision machinery, as a fraction of the epoch's
training time, at 10 and 50 tasks (one process, CPU unless CUDA is visible):

- capture: the extra per-task gradient passes (the controller's ``observe``), measured as the difference
  between an epoch with capture and the same epoch with capture off;
- decision: the epoch-end tensor-train factorisation + HDBSCAN grouping + planning (the controller's ``end_epoch``).

    python scripts/bench_selective.py [--tasks 10 50] [--samples 2048] [--batch-size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from distmtl.config.schema import ModelConfig, SelectiveConfig
from distmtl.data.sample_set import TargetSpec
from distmtl.engine.context import DistContext
from distmtl.engine.selective import SelectiveSharingController
from distmtl.models import build_model
from distmtl.tasks import build_tasks


def epoch(controller, tasks, images, targets, batch_size, capture: bool) -> float:
    """Seconds for one training epoch over the tensors (capture on or off)."""
    model = controller.model
    controller.locked = not capture
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        out = model(x)
        losses = {}
        for name, task in tasks.items():
            total, count = task.masked_loss_terms(out[name], targets[name][start : start + batch_size],
                                                  torch.ones(len(x), dtype=torch.bool, device=x.device))
            losses[name] = total / count
        controller.observe(losses)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
    if images.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ctx = DistContext(device=device)
    print(f"{args.samples} images 3×32×32, batch {args.batch_size}, device {device}, {torch.get_num_threads()} threads; "
          f"median of {args.repeats}")
    print("| tasks | epoch without capture (s) | capture (s) | decision (s) | capture + decision / epoch |")
    print("|---|---|---|---|---|")
    for k in args.tasks:
        torch.manual_seed(0)
        names = [f"task{i}" for i in range(k)]
        tasks = build_tasks(names, {n: TargetSpec("binary", 1) for n in names})
        cfg = ModelConfig(architecture="selective_sharing", channels=[16, 32, 64], bottleneck=64,
                          selective=SelectiveConfig(hidden=64, patience=10**6))
        images = torch.rand(args.samples, 3, 32, 32, device=device)
        targets = {n: torch.randint(0, 2, (args.samples,), device=device) for n in names}
        plain, captured, decided = [], [], []
        for _ in range(args.repeats):
            controller = SelectiveSharingController(build_model(cfg, tasks, 3).to(device).train())
            plain.append(epoch(controller, tasks, images, targets, args.batch_size, capture=False))
            captured.append(epoch(controller, tasks, images, targets, args.batch_size, capture=True))
            started = time.perf_counter()
            controller.end_epoch(ctx, 0, {n: 0.5 for n in names})
            decided.append(time.perf_counter() - started)
        median = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
        base, capture, decision = median(plain), median(captured) - median(plain), median(decided)
        print(f"| {k} | {base:.2f} | {capture:.2f} | {decision:.3f} | {(capture + decision) / base:.1%} |")


if __name__ == "__main__":
    main()
