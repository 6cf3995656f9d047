"""The cost of Selective Sharing's decision machinery as a fraction of a training epoch, at 10 and 50 tasks,
and a check that the grouping it finds on the generator is the one per-task gradients give.

Cost (one process, in-memory tensors, fully connected branches): training steps rotate between three modes,
step by step so that the machine's drift hits all alike — no capture, capture with one ``autograd.grad`` call
per task (the straightforward computation, for reference) and the controller's capture. A mode's capture
cost is its median step time minus that of steps without capture; the decision (tensor-train factorisation,
HDBSCAN, planning, on the epoch's summed gradients) is timed once per epoch. Every branch stays apart (the
state in which capture runs longest; once every task shares a branch, capture stops). Fractions are of an
epoch without capture.

Grouping: a real training run on the generator (``search_spaces/configs/selective_synthetic.yaml``) in
which every step also sums the per-task ``autograd.grad`` gradients; at every decision both sums go
through the same decision, and the table shows whether the groups agree, with the run's adjusted Rand
index against the generator's construction.

    python scripts/bench_selective.py [--quick] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score
from tabulate import tabulate

from distmtl.config.loading import load_config
from distmtl.config.schema import ARCHITECTURE
from distmtl.data.sample_set import TargetSpec
from distmtl.engine import LocalReporter
from distmtl.engine.selective import SelectiveSharingController, unit_norm
from distmtl.engine.trainer import Trainer
from distmtl.machine import benchmark_device, describe
from distmtl.models import build_model
from distmtl.sharing.decide import decide
from distmtl.tasks import build_tasks

MODES = ("none", "per-task calls", "controller")
CONFIG = Path(__file__).resolve().parents[1] / "search_spaces" / "configs" / "selective_synthetic.yaml"
TRUTH = {"fine": 0, "coarse": 0, "shape": 0, "colour": 1, "texture": 2}  # geometry tasks related by construction


def per_task_gradients(model, losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each task's gradient at its branch point, one ``autograd.grad`` call per task (K × branch-point shape)."""
    return torch.stack([torch.autograd.grad(losses[t], model.branch_point(t), retain_graph=True)[0]
                        for t in model.task_names])


def cost(k: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Mean step seconds per mode and the decision's seconds per epoch, for ``k`` one-vs-all tasks."""
    torch.manual_seed(0)
    names = [f"task{i}" for i in range(k)]
    tasks = build_tasks(names, {n: TargetSpec("binary", 1) for n in names})
    cfg = ARCHITECTURE.of(architecture="selective_sharing", channels=[16, 32, 64], bottleneck=64,
                      selective=dict(hidden=64, patience=10**6))
    images = torch.rand(args.samples, 3, 32, 32, device=device)
    targets = {n: torch.randint(0, 2, (args.samples,), device=device) for n in names}
    everyone = torch.ones(args.batch_size, dtype=torch.bool, device=device)
    weights = {n: 1.0 for n in names}
    controller = SelectiveSharingController(build_model(cfg, tasks, 3).to(device).train())
    model = controller.model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps: dict[str, list[float]] = {m: [] for m in MODES}
    decisions = []
    batches = args.samples // args.batch_size
    for epoch in range(args.epochs + 1):  # the first epoch warms up and is not counted
        summed = torch.zeros(k, *model.branch_point(names[0]).shape, device=device)
        for step in range(batches):
            mode = MODES[(step + epoch) % len(MODES)]
            rows = slice(step * args.batch_size, (step + 1) * args.batch_size)
            started = args.clock()
            out = model(images[rows])
            losses = {n: tasks[n].masked_loss_terms(out[n], targets[n][rows], everyone)[0] / args.batch_size
                      for n in names}
            if mode == "per-task calls":
                summed += per_task_gradients(model, losses)
            controller.locked = mode != "controller"
            controller.observe(losses, weights)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if epoch:
                steps[mode].append(args.clock() - started)
        started = args.clock()
        decide(unit_norm(summed.double()).cpu().numpy(), names, model.branch_of, {n: 0.5 for n in names},
               controller.cfg)
        if epoch:
            decisions.append(args.clock() - started)
    base = statistics.median(steps["none"])
    return {"step": base, "batches": batches, "decision": statistics.median(decisions),
            **{m: statistics.median(steps[m]) - base for m in MODES[1:]}}


def grouping(seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Train on the generator with the controller's capture, summing per-task gradients beside it; at every
    decision compare the groups both sums give. Returns the run's ARI and how many decisions agreed."""
    overrides = {"train.seed": seed, "data.seed": seed, "train.device": args.device}
    if args.quick:
        overrides.update({"data.num_samples": 1500, "optim.epochs": 6})
    trainer = Trainer(load_config(CONFIG, overrides), LocalReporter())
    controller, model = trainer.controller, trainer.model
    reference: list[torch.Tensor] = []
    windows: dict[str, list[torch.Tensor]] = {"controller": [], "per-task calls": []}
    record = {"decisions": 0, "agreed": 0, "max_rel_diff": 0.0}
    observe, end_epoch = controller.observe, controller.end_epoch

    def observe_both(losses, weights):
        if controller.capturing:
            reference.append(per_task_gradients(model, losses).float())
        observe(losses, weights)

    def end_epoch_both(ctx, epoch, mean_losses):
        if controller.capturing:
            sums = {"controller": controller.epoch_gradients.double(),
                    "per-task calls": torch.stack(reference).sum(0).double()}
            reference.clear()
            scale = sums["per-task calls"].flatten(1).norm(dim=1).clamp(min=1e-30)
            diff = (sums["controller"] - sums["per-task calls"]).flatten(1).norm(dim=1) / scale
            record["max_rel_diff"] = max(record["max_rel_diff"], diff.max().item())
            for name, total in sums.items():
                windows[name] = [*windows[name], unit_norm(total).cpu()][-controller.cfg.window:]
            if len(windows["controller"]) == controller.cfg.window:
                labels = [decide(torch.stack(w).sum(0).numpy(), model.task_names, model.branch_of, mean_losses,
                                 controller.cfg).labels for w in windows.values()]
                record["decisions"] += 1
                record["agreed"] += labels[0] == labels[1]
        changed = end_epoch(ctx, epoch, mean_losses)
        if changed:
            windows.update({name: [] for name in windows})
        return changed

    controller.observe, controller.end_epoch = observe_both, end_epoch_both
    trainer.fit()
    tasks = list(TRUTH)
    record["ari"] = adjusted_rand_score([TRUTH[t] for t in tasks], [model.branch_of[t] for t in tasks])
    record["groups"] = model.groups()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--samples", type=int, default=4096, help="training images per epoch (cost)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per task count, after one warm-up epoch")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="generator runs (grouping)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time, steadier on a shared CPU machine (not with --device cuda)")
    parser.add_argument("--quick", action="store_true", help="2048 images, 2 timed epochs, one short generator run")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.epochs, args.seeds = 2048, 2, args.seeds[:1]
    if args.samples < args.batch_size * len(MODES):
        parser.error(f"--samples must hold at least {len(MODES)} batches of --batch-size")
    if args.clock == "cpu" and args.device == "cuda":
        parser.error("--clock cpu does not see GPU time; use --clock wall with --device cuda")
    clock = args.clock
    args.clock = time.process_time if clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    device = benchmark_device(args.device)
    print(f"machine: {describe(device)}")
    print(f"\n### Cost: {args.samples} images 3×32×32 per epoch, batch {args.batch_size}, fully connected branches, "
          f"{args.epochs} timed epochs (steps rotate between modes), {clock} clock\n")
    headline: dict[str, float] = {}
    table = []
    for k in args.tasks:
        c = cost(k, args, device)
        epoch = c["step"] * c["batches"]
        table.append([str(k), f"{c['step'] * 1e3:.1f}", f"{c['per-task calls'] / c['step']:.1%}",
                      f"{c['controller'] / c['step']:.1%}", f"{c['decision'] / epoch:.2%}",
                      f"{c['controller'] / c['step'] + c['decision'] / epoch:.1%}"])
        headline[f"capture_fraction_{k}"] = round(c["controller"] / c["step"], 4)
        headline[f"capture_fraction_{k}_per_task_calls"] = round(c["per-task calls"] / c["step"], 4)
        headline[f"decision_fraction_{k}"] = round(c["decision"] / epoch, 4)
    print(tabulate(table, ["tasks", "step without capture (ms)", "per-task calls: capture / epoch",
                           "controller: capture / epoch", "decision / epoch", "controller: capture + decision / epoch"],
                   tablefmt="github", disable_numparse=True))
    print(f"\n### Grouping on the generator ({CONFIG.name}{', quick: 1500 samples, 6 epochs' if args.quick else ''})\n")
    scores, agreed, decisions, table = [], 0, 0, []
    for seed in args.seeds:
        r = grouping(seed, args)
        scores.append(r["ari"])
        agreed, decisions = agreed + r["agreed"], decisions + r["decisions"]
        table.append([str(seed), f"{r['agreed']}/{r['decisions']}", f"{r['max_rel_diff']:.1e}", str(r["groups"]),
                      f"{r['ari']:.2f}"])
    print(tabulate(table, ["seed", "decisions with the same groups (controller vs per-task calls)",
                           "max relative difference of the epoch sums", "groups found", "ARI vs construction"],
                   tablefmt="github", disable_numparse=True))
    headline.update({"groups_agree": f"{agreed}/{decisions}", "ari_mean": round(float(np.mean(scores)), 3)})
    print()
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
