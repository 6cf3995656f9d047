"""The training loop of one worker: epochs, validation, best-epoch selection, test, checkpoints, reports."""

from __future__ import annotations

import copy
import logging
import math
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from distmtl.config.checks import check_config
from distmtl.config.schema import Config
from distmtl.data.noise import salt_and_pepper
from distmtl.data.sources import RECONSTRUCTION, build_samples, check_targets
from distmtl.engine.accumulator import EpochAccumulator
from distmtl.engine.checkpoint import ARTIFACTS_DIR, load_checkpoint, rng_state, save_artifacts, save_checkpoint, set_rng_state
from distmtl.engine.context import DistContext, resolve_device
from distmtl.engine.loaders import build_loaders, make_splits, to_device
from distmtl.engine.optim import build_optimizer
from distmtl.engine.reporter import Reporter
from distmtl.models import MultiTaskModel, build_model
from distmtl.tasks import Task, build_tasks, selectable_metrics
from distmtl.weighting import Weighting, build_weighting

log = logging.getLogger("distmtl")


@dataclass
class Best:
    """The best epoch so far on the validation selection metric, and a CPU copy of its weights."""

    epoch: int = -1
    score: float = math.nan
    state: dict[str, torch.Tensor] | None = None
    structure: dict | None = None

    def improves(self, score: float, mode: str) -> bool:
        if math.isnan(score):
            return False
        if self.epoch < 0 or math.isnan(self.score):
            return True
        return score < self.score if mode == "min" else score > self.score


def train(config: Config, reporter: Reporter, ctx: DistContext | None = None) -> dict[str, float]:
    """Train ``config`` on this worker and return the last report (with test metrics at the best epoch).

    Every rank must call this with the same config. The model is wrapped in DDP when the process
    group has more than one rank. A checkpoint from ``reporter.restore_dir()`` resumes the run.
    """
    check_config(config)
    ctx = ctx or DistContext.current(resolve_device(config.train.device))
    torch.manual_seed(config.train.seed)
    samples = build_samples(config.data, config.tasks)
    splits = make_splits(config, samples)
    tasks = build_tasks(config.tasks, check_targets(config.data, config.tasks))
    model = build_model(config.model, tasks, in_channels=samples.image_shape[0]).to(ctx.device)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weighting = build_weighting(config.weighting, config.tasks)
    selection = config.train.selection_metric
    mode = config.train.selection_mode or selectable_metrics(tasks)[selection]

    start_epoch, best = 0, Best()
    with reporter.restore_dir() as restore:
        payload = load_checkpoint(restore) if restore else None
    if payload:
        model.restore_structure(payload.get("structure", {}))
    optimizer = build_optimizer(config.optim, model, weighting.parameters())
    if payload:
        start_epoch, best = _restore(payload, model, optimizer, weighting)
        log.info("resumed from %s at epoch %d", restore, start_epoch)
    net = _wrap(model, ctx, samples.image_shape)
    loaders = build_loaders(config, samples, splits, ctx)
    noise = torch.Generator(device=ctx.device)
    counts = model.parameter_counts()
    if ctx.is_main:
        log.info("training %s on %d/%d/%d samples (train/val/test), %d parameters, %d worker(s), device %s",
                 config.model.architecture, *map(len, splits), counts["total"], ctx.world_size, ctx.device)

    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, config.optim.epochs):
        started = time.perf_counter()
        loaders.sampler.set_epoch(epoch)
        noise.manual_seed(config.train.seed * 1_000_003 + epoch * 7919 + ctx.rank)
        weights = weighting.weights()
        model.train()
        train_losses, train_metrics = _run_epoch(net, tasks, loaders.train, ctx, config, weights, optimizer, noise,
                                                 weighting)
        train_seconds = time.perf_counter() - started
        weighting.end_epoch(train_losses)
        if model.end_epoch(ctx, epoch, train_losses):  # the architecture changed on every rank alike
            optimizer = _rebuild_optimizer(config, model, weighting, optimizer)
            net = _wrap(model, ctx, samples.image_shape)
            counts = model.parameter_counts()
        model.eval()
        val_losses, val_metrics = _run_epoch(net, tasks, loaders.val, ctx, config, weighting.static)
        epoch_seconds = time.perf_counter() - started

        metrics = {"epoch": epoch, "epoch_time_s": epoch_seconds,
                   "train/images_per_s": len(splits[0]) / train_seconds}
        metrics.update(_flatten("train", train_losses, train_metrics, weights))
        metrics.update(_flatten("val", val_losses, val_metrics, weighting.static))
        metrics.update({f"weight/{t}": w for t, w in weights.items()})
        metrics.update({f"params/{k}": v for k, v in counts.items()})
        metrics.update(model.extra_metrics())
        if best.improves(metrics[selection], mode):
            best = Best(epoch, metrics[selection], _cpu_state(model), model.structure())
        metrics.update({"best_epoch": best.epoch, f"best/{selection}": best.score})
        rng = rng_state()  # before the test pass, whose loader draws from the RNG, so resuming is exact
        if epoch == config.optim.epochs - 1:
            metrics.update(_test_at_best(model, best, tasks, loaders.test, ctx, config, weighting.static))
        _report(reporter, ctx, metrics, model, epoch, {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "weighting": weighting.state_dict(),
            "best": {"epoch": best.epoch, "score": best.score, "state": best.state, "structure": best.structure},
            "structure": model.structure(),
            "rng": rng,
            "config": config.model_dump(),
            "metrics": metrics,
        })
        if ctx.is_main:
            log.info("epoch %d/%d  %s  (%.1f s)", epoch + 1, config.optim.epochs, _summary(metrics, selection), epoch_seconds)
    return metrics


def _run_epoch(
    net: nn.Module,
    tasks: dict[str, Task],
    loader,
    ctx: DistContext,
    config: Config,
    weights: dict[str, float],
    optimizer: torch.optim.Optimizer | None = None,
    noise: torch.Generator | None = None,
    weighting: Weighting | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """One pass over ``loader``: a training epoch when ``optimizer`` is given, else an evaluation."""
    training = optimizer is not None
    acc = EpochAccumulator(tasks, ctx.device)
    autocast = (torch.autocast(ctx.device.type, dtype=torch.bfloat16)
                if config.train.precision == "bf16" else nullcontext())
    with torch.set_grad_enabled(training):
        for batch in loader:
            images, targets, masks = to_device(batch, ctx.device, config.train.channels_last)
            if RECONSTRUCTION in tasks:  # the clean (un-noised) input is the target
                targets[RECONSTRUCTION] = images
                masks[RECONSTRUCTION] = torch.ones(len(images), dtype=torch.bool, device=images.device)
            if training:
                images = salt_and_pepper(images, config.data.noise_level, noise)
            with autocast:
                outputs = net(images)
            terms = {name: task.masked_loss_terms(outputs[name], targets[name], masks[name]) for name, task in tasks.items()}
            if training:
                losses = {name: total / count.clamp(min=1) for name, (total, count) in terms.items()}
                _unwrap(net).observe_losses(losses)
                loss = weighting.combine(losses, weights)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                _average_gradients(weighting.parameters(), ctx)
                optimizer.step()
            acc.add(outputs, targets, masks, terms)
    return acc.reduce(ctx)


def _wrap(model: MultiTaskModel, ctx: DistContext, image_shape: tuple[int, ...]) -> nn.Module:
    """DDP around the model when there are several ranks (again after every change of its parameters)."""
    if ctx.world_size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                                   find_unused_parameters=_has_unused_parameters(model, image_shape, ctx.device))


def _unwrap(net: nn.Module) -> MultiTaskModel:
    return net.module if isinstance(net, DistributedDataParallel) else net  # type: ignore[return-value]


def _rebuild_optimizer(config: Config, model: MultiTaskModel, weighting: Weighting,
                       old: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """A new optimizer over the model's current parameters; surviving parameters keep their state."""
    optimizer = build_optimizer(config.optim, model, weighting.parameters())
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param in old.state:
                optimizer.state[param] = old.state[param]
    return optimizer


def _has_unused_parameters(model: nn.Module, image_shape: tuple[int, ...], device: torch.device) -> bool:
    """Whether some trainable parameter gets no gradient from the task outputs (e.g. a bottleneck that
    only dense heads follow); DDP must then look for unused parameters every step, or it hangs."""
    model.eval()
    outputs = model(torch.zeros(2, *image_shape, device=device))
    sum(o.float().sum() for o in outputs.values()).backward()
    unused = any(p.requires_grad and p.grad is None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    return unused


def _average_gradients(parameters: list[torch.nn.Parameter], ctx: DistContext) -> None:
    """Average the gradients of parameters outside DDP (a learned weighting's) across ranks."""
    for p in parameters:
        if p.grad is not None and ctx.world_size > 1:
            ctx.all_reduce_sum(p.grad).div_(ctx.world_size)


def _flatten(
    split: str, losses: dict[str, float], metrics: dict[str, dict[str, float]], weights: dict[str, float]
) -> dict[str, float]:
    """``{split}/loss`` (weighted sum) plus ``{split}/{task}/loss`` and ``{split}/{task}/{metric}``."""
    flat = {f"{split}/loss": sum(weights[t] * v for t, v in losses.items())}
    for task, loss in losses.items():
        flat[f"{split}/{task}/loss"] = loss
        flat.update({f"{split}/{task}/{name}": value for name, value in metrics[task].items()})
    return flat


def _test_at_best(
    model: MultiTaskModel, best: Best, tasks: dict[str, Task], loader, ctx: DistContext, config: Config,
    weights: dict[str, float],
) -> dict[str, float]:
    """Test metrics of the best epoch's weights (every rank evaluates its shard; results are all-reduced)."""
    if best.state is None:
        return {}
    evaluated = copy.deepcopy(model)
    evaluated.restore_structure(best.structure or {})
    evaluated.load_state_dict(best.state)
    evaluated.eval()
    losses, metrics = _run_epoch(evaluated, tasks, loader, ctx, config, weights)
    return _flatten("test", losses, metrics, weights)


def _report(reporter: Reporter, ctx: DistContext, metrics: dict[str, float], model: MultiTaskModel, epoch: int,
            checkpoint: dict[str, Any]) -> None:
    """Every rank reports; rank 0 attaches this epoch's checkpoint, with the model's artifacts (PNG, JSON)
    in its ``artifacts/`` folder (the tracking callbacks log them to MLflow)."""
    if not ctx.is_main:
        reporter.report(metrics, None)
        return
    with tempfile.TemporaryDirectory(prefix="distmtl-ckpt-") as directory:
        save_checkpoint(directory, checkpoint)
        save_artifacts(model.artifacts(), Path(directory) / ARTIFACTS_DIR, epoch)
        reporter.report(metrics, directory)


def _restore(payload: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, weighting: Weighting) -> tuple[int, Best]:
    """Load a checkpoint into the (already reshaped) model, optimizer and weighting; return (next epoch, best so far)."""
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    weighting.load_state_dict(payload["weighting"])
    set_rng_state(payload["rng"])
    return payload["epoch"] + 1, Best(**payload["best"])


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _summary(metrics: dict[str, Any], selection: str) -> str:
    keys = ["train/loss", "val/loss"] + ([selection] if selection != "val/loss" else [])
    keys += [k for k in metrics if k.startswith("test/") and k.count("/") == 2 and not k.endswith("/loss")]
    return "  ".join(f"{k} {metrics[k]:.4g}" for k in keys)
