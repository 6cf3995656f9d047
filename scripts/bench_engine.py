"""Training throughput of distmtl's engine against a plain PyTorch loop written here, in one process.

Both train the same model (a copy of the engine's, made before either trains), with the same
optimizer (``build_optimizer``), batch size, per-task losses and weights, on the same training images:
the engine through ``Trainer.train_epoch`` over its real loader (noise, weighting, on-device metric
accumulation, divergence guard, learning-rate schedule, structure controller; no validation or
checkpoint), the plain loop through a ``DataLoader`` over a ``TensorDataset`` of those images, drawn in the
engine's order (a copy of its sampler), so both models follow nearly the same trajectory and meet the
same numbers (on a CPU, denormal values alone can change a step's cost by several per cent). Epochs
alternate between the two (after one warm-up epoch each) so that the machine's drift hits both; the
table gives median images/s and their ratio. Settings: hard sharing with 3 tasks, and cross-stitch with
dense heads (segmentation, detection, classification).

With ``--precision`` (default on CUDA) a second table trains torchvision's ResNet-18 (no weights,
``--image-size`` px, 224 by default) in fp32, bf16 autocast and bf16 autocast + channels_last
(``--compile`` adds torch.compile), each against fp32.

    python scripts/bench_engine.py [--quick] [--device cpu|cuda] [--repeats 9] [--threads N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torchvision
from tabulate import tabulate
from torch.utils.data import DataLoader, TensorDataset

from distmtl.config.loading import load_config
from distmtl.engine import LocalReporter
from distmtl.engine.optim import build_optimizer
from distmtl.engine.trainer import Trainer
from distmtl.machine import benchmark_device, describe

CONFIGS = Path(__file__).resolve().parents[1] / "search_spaces" / "configs"
#: name → (config file, its overrides, extra overrides with --quick)
SETTINGS = {
    "hard sharing, 3 tasks": ("quick.yaml", {"data.target_fraction": {}, "data.noise_level": 0.0,
                                             "model.dropout": 0.0}, {}),
    "cross-stitch, dense heads": ("cross_stitch.yaml", {}, {"data.num_samples": 800, "data.image_size": 32}),
}


class PlainLoop:
    """The loop a user writes by hand: shuffled mini-batches, forward, weighted sum of the task losses,
    backward, step."""

    def __init__(self, trainer: Trainer, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> None:
        self.model = copy.deepcopy(trainer.model)  # the engine's model as built, before either trains
        self.optimizer = build_optimizer(trainer.config.optim, self.model)
        self.tasks, self.device = trainer.tasks, trainer.ctx.device
        self.names = list(self.tasks)
        self.sampler = copy.deepcopy(trainer.loaders.sampler)  # the engine's batches, in the engine's order
        self.loader = DataLoader(TensorDataset(images, *(targets[t] for t in self.names)),
                                 batch_size=trainer.config.data.batch_size, sampler=self.sampler,
                                 pin_memory=self.device.type == "cuda")

    def epoch(self, epoch: int, weights: dict[str, float]) -> None:
        self.sampler.set_epoch(epoch)
        self.model.train()
        for images, *targets in self.loader:
            images = images.to(self.device, non_blocking=True)
            outputs = self.model(images)
            loss = sum(weights[t] * self.tasks[t].per_sample_loss(outputs[t].float(),
                                                                  y.to(self.device, non_blocking=True)).mean()
                       for t, y in zip(self.names, targets))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


def training_tensors(trainer: Trainer) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The engine's whole training split as collated tensors (every sample carries every target here)."""
    dataset = trainer.samples.dataset(trainer.splits[0])
    batch = next(iter(DataLoader(dataset, batch_size=len(dataset))))
    if not all(bool(m.all()) for m in batch["has_target"].values()):
        raise SystemExit("error: the plain loop needs every target present; drop data.target_fraction")
    return batch["image"], batch["targets"]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_vs_plain(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Median images/s of the engine and of the plain loop over ``args.repeats`` alternating epochs each."""
    path, overrides, quick = SETTINGS[name]
    overrides = {**overrides, **(quick if args.quick else {}), "train.device": args.device,
                 "optim.schedule": "constant"}
    trainer = Trainer(load_config(CONFIGS / path, overrides), LocalReporter())
    images, targets = training_tensors(trainer)
    plain = PlainLoop(trainer, images, targets)
    seen = len(images)
    times: dict[str, list[float]] = {"engine": [], "plain": []}

    def run(which: str, epoch: int) -> float:
        weights = trainer.weighting.weights()
        synchronize(trainer.ctx.device)
        started = args.clock()
        if which == "engine":
            trainer.train_epoch(epoch, weights)
        else:
            plain.epoch(epoch, weights)
        synchronize(trainer.ctx.device)
        return args.clock() - started

    for epoch in range(args.repeats + 1):  # epoch 0 warms both up
        order = ("engine", "plain") if epoch % 2 else ("plain", "engine")
        for which in order:
            elapsed = run(which, epoch)
            if epoch:
                times[which].append(elapsed)
    engine, hand = (seen / statistics.median(times[w]) for w in ("engine", "plain"))
    return {"samples": seen, "batch": trainer.config.data.batch_size, "size": images.shape[-1],
            "engine": engine, "plain": hand, "ratio": engine / hand}


def precision_rows(args: argparse.Namespace, device: torch.device) -> list[tuple[str, float]]:
    """Images/s of ResNet-18 training steps per precision mode, the modes alternating step by step."""
    torch.manual_seed(0)
    images = torch.rand(args.precision_batch, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, 1000, (args.precision_batch,), device=device)
    modes = {"fp32": (False, False), "bf16 autocast": (True, False), "bf16 autocast + channels_last": (True, True)}
    if args.compile:
        modes["bf16 autocast + channels_last + torch.compile"] = (True, True)
    steps = {}
    for mode, (bf16, channels_last) in modes.items():
        model = torchvision.models.resnet18(weights=None).to(device)
        x = images
        if channels_last:
            model, x = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
        forward = torch.compile(model) if mode.endswith("compile") else model
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

        def step(forward=forward, x=x, optimizer=optimizer, autocast=autocast) -> None:
            with autocast:
                loss = torch.nn.functional.cross_entropy(forward(x), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        for _ in range(args.precision_warmup):  # compilation and cudnn autotuning happen here
            step()
        steps[mode] = step
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.precision_steps):
        for mode, step in steps.items():
            synchronize(device)
            started = time.perf_counter()
            step()
            synchronize(device)
            seconds[mode].append(time.perf_counter() - started)
    return [(mode, args.precision_batch / statistics.median(s)) for mode, s in seconds.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=9, help="timed epochs of each, after one warm-up epoch")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time, steadier on a shared CPU machine (not with --device cuda)")
    parser.add_argument("--precision", action=argparse.BooleanOptionalAction, default=None,
                        help="the ResNet-18 precision table (default: on with CUDA)")
    parser.add_argument("--image-size", type=int, default=224, help="ResNet-18 input size (precision table)")
    parser.add_argument("--precision-batch", type=int, default=128)
    parser.add_argument("--precision-steps", type=int, default=20, help="timed steps per precision mode")
    parser.add_argument("--precision-warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="add a torch.compile row to the precision table")
    parser.add_argument("--quick", action="store_true",
                        help="at most 7 timed epochs, a smaller cross-stitch set; "
                             "on CPU a 64 px, batch 8 precision table")
    args = parser.parse_args()
    if args.repeats < 1 or args.precision_steps < 1 or args.precision_batch < 1 or args.image_size < 32:
        parser.error("--repeats, --precision-steps and --precision-batch must be ≥ 1, --image-size ≥ 32")
    if args.clock == "cpu" and args.device == "cuda":
        parser.error("--clock cpu does not see GPU time; use --clock wall with --device cuda")
    device = benchmark_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats = min(args.repeats, 7)
        if device.type == "cpu":
            args.image_size, args.precision_batch, args.precision_steps, args.precision_warmup = 64, 8, 3, 1
    clock = args.clock
    args.clock = time.process_time if clock == "cpu" else time.perf_counter
    print(f"machine: {describe(device)}")
    print(f"\n### Engine vs a plain loop: median of {args.repeats} alternating epochs, {clock} clock\n")
    headline: dict[str, float] = {}
    table = []
    for name, key in zip(SETTINGS, ("engine_vs_hand", "engine_vs_hand_cross_stitch")):
        r = engine_vs_plain(name, args)
        table.append([name, str(r["samples"]), str(r["batch"]), str(r["size"]), f"{r['engine']:.0f}",
                      f"{r['plain']:.0f}", f"{r['ratio']:.3f}"])
        headline[key] = round(r["ratio"], 3)
    print(tabulate(table, ["setting", "training images", "batch", "image px", "engine (images/s)",
                           "plain loop (images/s)", "engine / plain"], tablefmt="github", disable_numparse=True))
    if args.precision if args.precision is not None else device.type == "cuda":
        rows = precision_rows(args, device)
        print(f"\n### ResNet-18 (torchvision, no weights), {args.image_size} px, batch {args.precision_batch}: "
              f"median of {args.precision_steps} steps per mode, modes alternating\n")
        print(tabulate([[mode, f"{rate:.0f}", f"{rate / rows[0][1]:.2f}×"] for mode, rate in rows],
                       ["mode", "images/s", "vs fp32"], tablefmt="github", disable_numparse=True))
        headline["bf16_channels_last_vs_fp32"] = round(rows[2][1] / rows[0][1], 3)
        if args.compile:
            headline["compile_vs_fp32"] = round(rows[3][1] / rows[0][1], 3)
    print()
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
