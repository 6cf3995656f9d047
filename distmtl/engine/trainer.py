"""The training run of one worker: epochs, validation, best-epoch selection, test, checkpoints, reports."""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from distmtl.config.schema import Config
from distmtl.data.noise import salt_and_pepper
from distmtl.data.sources import RECONSTRUCTION, build_samples
from distmtl.engine.accumulator import EpochAccumulator
from distmtl.engine.affinity import build_probe
from distmtl.engine.assembly import build_parts
from distmtl.engine.buffer_sync import BufferSync
from distmtl.engine.checkpoint import ARTIFACTS_DIR, Best, TrainingState, rng_state, set_rng_state
from distmtl.engine.context import DistContext, resolve_device
from distmtl.engine.divergence import DivergenceGuard
from distmtl.engine.faults import InjectedFault
from distmtl.engine.loaders import build_loaders, make_splits, to_device
from distmtl.engine.optim import build_optimizer
from distmtl.engine.reporter import Reporter
from distmtl.engine.schedule import LearningRateSchedule
from distmtl.engine.startup import StartupClock
from distmtl.engine.structure import build_controller
from distmtl.errors import DistmtlError
from distmtl.models import MultiTaskModel
from distmtl.tracking.plots import save_artifacts
from distmtl.weighting import ParameterSplit, Step, split_parameters

log = logging.getLogger("distmtl")
#: Test images drawn with a segmentation or detection task's predictions over them.
EXAMPLES = 4

#: Wall-clock figures of a report (and ``startup/…``): everything else a run reports repeats exactly for a seed.
TIMINGS = ("epoch_time_s", "train/images_per_s", "train/step_ms")

Losses = dict[str, float]
TaskMetrics = dict[str, dict[str, float]]

#: Config entries a checkpoint must share with the run that resumes from it.
_MUST_MATCH = {"tasks": lambda c: c["tasks"], "model.architecture": lambda c: c["model"]["architecture"],
               "model.encoder": lambda c: c["model"]["encoder"], "model.channels": lambda c: c["model"]["channels"],
               "model.bottleneck": lambda c: c["model"]["bottleneck"]}


class Trainer:
    """One worker's share of a (possibly distributed) training run.

    Every rank builds a Trainer from the same config. The model is wrapped in DDP when the
    process group has more than one rank; a checkpoint from ``reporter.restore_dir()`` resumes the
    run where it stopped. :meth:`fit` runs the remaining epochs and returns the last report.
    """

    def __init__(self, config: Config, reporter: Reporter, ctx: DistContext | None = None,
                 fault: InjectedFault | None = None) -> None:
        self.config = config
        self.reporter = reporter
        self.fault = fault
        self.ctx = ctx or DistContext.current(resolve_device(config.train.device))
        self.clock = StartupClock()
        torch.manual_seed(config.train.seed)
        self.samples = build_samples(config.data, config.tasks)
        self.splits = make_splits(config, self.samples)
        self.clock.mark("data")
        parts = build_parts(config, in_channels=self.samples.image_shape[0])
        self.tasks, self.selection_mode, self.baseline = parts.tasks, parts.selection_mode, parts.baseline
        self.model = parts.model.to(self.ctx.device)
        if config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.weighting = parts.weighting.to(self.ctx.device)
        self.controller = build_controller(config.model.architecture, self.model)
        self.optimizer = self._new_optimizer()
        self.best, self.start_epoch, self.global_step = Best(), 0, 0
        # Set by the test pass after the last epoch, drawn with its records.
        self.prediction_records: dict[str, dict] = {}
        with reporter.restore_dir() as restore:
            state = TrainingState.load(restore) if restore else None
        if state:
            self.load_state_dict(state)
            log.info("resumed from %s at epoch %d", restore, self.start_epoch)
        self.resumed_report = state.metrics if state else None
        self.clock.mark("model")
        self.guard = DivergenceGuard(self.ctx)
        self.net = self._wrap()
        self.clock.mark("ddp")
        self.loaders = build_loaders(config, self.samples, self.splits, self.ctx)
        self.schedule = LearningRateSchedule(config.optim, len(self.loaders.train))
        self.noise = torch.Generator(device=self.ctx.device)
        self.autocast = (torch.autocast(self.ctx.device.type, dtype=torch.bfloat16)
                         if config.train.precision == "bf16" else nullcontext())
        self.affinity = build_probe(config, self.model, self.controller, self.samples.image_shape, self.ctx,
                                    self.autocast)
        if self.affinity and state:
            self.affinity.load_state_dict(state.affinity)
        self.clock.mark("loaders")

    # --- the run ---------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train the remaining epochs; return the last report (with test metrics at the best epoch)."""
        if self.ctx.is_main:
            log.info("training %s on %d/%d/%d samples (train/val/test), %d parameters, %d worker(s), device %s",
                     self.config.model.architecture, *map(len, self.splits), self.model.parameter_counts()["total"],
                     self.ctx.world_size, self.ctx.device)
        metrics: dict[str, float] = {}
        if self.resumed_report:
            self.reporter.resumed(self.resumed_report)
        for epoch in range(self.start_epoch, self.config.optim.epochs):
            metrics = self.run_epoch(epoch)
        return metrics

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch, let the structure controller act, validate, track the best epoch, test after the
        last epoch, and report with a checkpoint."""
        started = time.perf_counter()
        weights = self.weighting.weights()
        train_losses, train_metrics = self.train_epoch(epoch, weights)
        train_seconds = time.perf_counter() - started
        affinity = self.affinity.end_epoch(train_seconds) if self.affinity else {}
        self.weighting.end_epoch(train_losses)
        if self.controller and self.controller.end_epoch(self.ctx, epoch, train_losses):
            self.optimizer = self._rebuild_optimizer()  # the architecture changed, on every rank alike
            self.net = self._wrap()
        val_losses, val_metrics = self.evaluate(self.net, self.loaders.val)
        selection = self.config.train.selection_metric

        metrics = {"epoch": epoch, "epoch_time_s": time.perf_counter() - started,
                   "train/images_per_s": len(self.splits[0]) / train_seconds,
                   "train/step_ms": 1000 * train_seconds / max(1, len(self.loaders.train)),
                   "lr": self.optimizer.param_groups[0]["lr"]}
        metrics.update(_flatten("train", train_losses, train_metrics, weights))
        metrics.update(_flatten("val", val_losses, val_metrics, self.weighting.static))
        self.guard.check_value("validation", metrics["val/loss"])
        if self.baseline:
            metrics["val/delta_m"] = self.baseline.delta_m(metrics, "val")
        metrics.update({f"weight/{t}": w for t, w in weights.items()})
        metrics.update(self.weighting.epoch_metrics())
        metrics.update({f"params/{k}": v for k, v in self.model.parameter_counts().items()})
        metrics.update(self.model.extra_metrics())
        metrics.update(self.clock.metrics())
        metrics.update(affinity)
        if self.controller:
            metrics.update(self.controller.metrics())
        if self.best.improves(metrics[selection], self.selection_mode):
            self.best = Best(epoch, metrics[selection], _cpu_state(self.model), self.model.structure())
        metrics.update({"best_epoch": self.best.epoch, f"best/{selection}": self.best.score})
        rng = self.ctx.gather_objects(rng_state())  # every rank's, before the test pass draws from them
        if epoch == self.config.optim.epochs - 1:
            metrics.update(self.test_at_best())
        self._report(self.state_dict(epoch, rng, metrics))
        if self.ctx.is_main:
            log.info("epoch %d/%d  %s  (%.1f s)", epoch + 1, self.config.optim.epochs, _summary(metrics, selection),
                     metrics["epoch_time_s"])
        return metrics

    def train_epoch(self, epoch: int, weights: dict[str, float]) -> tuple[Losses, TaskMetrics]:
        """One pass over this rank's training shard; returns the all-reduced mean losses and metrics."""
        self.loaders.sampler.set_epoch(epoch)
        self.noise.manual_seed(self.config.train.seed * 1_000_003 + epoch * 7919 + self.ctx.rank)
        self.model.train()
        self.guard.start_epoch(epoch)
        accumulator = EpochAccumulator(self.tasks, self.ctx.device)
        for index, batch in enumerate(self.loaders.train):
            if self.fault:
                self.fault.maybe_fire(self.ctx.rank, epoch, index)
            images, targets, masks = self._batch(batch)
            images = salt_and_pepper(images, self.config.data.noise_level, self.noise)
            with self.autocast:
                outputs = self.net(images)
            terms = self._loss_terms(outputs, targets, masks)
            losses = {name: total / count.clamp(min=1) for name, (total, count) in terms.items()}
            counts = {name: count for name, (_, count) in terms.items()}
            if self.affinity:  # before the controller hooks this step's losses
                self.affinity.observe(self.global_step, losses, counts, images,
                                      partial(self._loss_terms, targets=targets, masks=masks), self.optimizer,
                                      self.schedule.factor(self.global_step))
            if self.controller:
                self.controller.observe(losses, weights)
            self.optimizer.zero_grad(set_to_none=True)
            step = Step(self.model, self.reach, counts, self.ctx,
                        self.global_step, self.config.train.seed, partial(self._losses_again, images, targets, masks))
            self.guard.observe(self.weighting.backward(losses, weights, step))
            self.schedule.apply(self.optimizer, self.global_step)
            self.optimizer.step()
            self.weighting.after_step(step)
            self.global_step += 1
            if index == 0:
                self.clock.mark("first_step")
            accumulator.add(outputs, targets, masks, terms)
        self.guard.check()
        return accumulator.reduce(self.ctx)

    @torch.no_grad()
    def evaluate(self, net: nn.Module, loader) -> tuple[Losses, TaskMetrics]:
        """One pass over ``loader`` in eval mode; returns the all-reduced mean losses and metrics."""
        net.eval()
        accumulator = EpochAccumulator(self.tasks, self.ctx.device)
        for batch in loader:
            images, targets, masks = self._batch(batch)
            with self.autocast:
                outputs = net(images)
            accumulator.add(outputs, targets, masks, self._loss_terms(outputs, targets, masks))
        return accumulator.reduce(self.ctx)

    def score(self, model: MultiTaskModel, split: str = "test") -> dict[str, float]:
        """``split`` metrics (and Δm where the config has a baseline) of ``model``, e.g. one loaded from MLflow,
        on this run's data and split."""
        losses, metrics = self.evaluate(model.to(self.ctx.device), getattr(self.loaders, split))
        flat = _flatten(split, losses, metrics, self.weighting.static)
        if self.baseline:
            flat[f"{split}/delta_m"] = self.baseline.delta_m(flat, split)
        return flat

    def test_at_best(self) -> dict[str, float]:
        """Test metrics of the best epoch's weights (every rank evaluates its shard; results are all-reduced)."""
        if self.best.state is None:
            return {}
        evaluated = copy.deepcopy(self.model)
        evaluated.restore_structure(self.best.structure or {})
        evaluated.load_state_dict(self.best.state)
        self.prediction_records = self.predictions(evaluated)
        return self.score(evaluated, "test")

    @torch.no_grad()
    def predictions(self, net: nn.Module) -> dict[str, dict]:
        """Each task's prediction record on the test split (confusion matrix, predicted vs true), from every
        rank's samples, keyed ``<record kind>@<task>``, with the task's class names where the data has them;
        and, for tasks that draw examples (segmentation, detection), the first few test images of rank 0 with
        their predictions, keyed ``<example kind>@<task>``. Empty on ranks other than 0."""
        drawn = [name for name, task in self.tasks.items() if task.record_kind]
        shown = [name for name, task in self.tasks.items() if task.example_kind]
        if not drawn and not shown:
            return {}
        net.eval()
        kept: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {t: [] for t in drawn}
        examples: dict[str, list[tuple[torch.Tensor, ...]]] = {t: [] for t in shown}
        for batch in self.loaders.test:
            images, targets, masks = self._batch(batch)
            with self.autocast:
                outputs = net(images)
            for t in drawn:
                kept[t].append((outputs[t][masks[t]].float().cpu(), targets[t][masks[t]].cpu()))
            for t in shown:
                if sum(len(e[0]) for e in examples[t]) < EXAMPLES:
                    m = masks[t]
                    examples[t].append((images[m][:EXAMPLES].float().cpu(), outputs[t][m][:EXAMPLES].float().cpu(),
                                        targets[t][m][:EXAMPLES].cpu()))
        local = {t: (torch.cat([o for o, _ in pairs]), torch.cat([y for _, y in pairs])) for t, pairs in kept.items()}
        gathered = self.ctx.gather_objects(local) if drawn else []
        if not self.ctx.is_main:
            return {}
        joined = {t: (torch.cat([g[t][0] for g in gathered]), torch.cat([g[t][1] for g in gathered])) for t in drawn}
        names = self.samples.class_names
        records = {f"{self.tasks[t].record_kind}@{t}": {**self.tasks[t].prediction_record(*joined[t]),
                                                         **({"class_names": names[t]} if t in names else {})}
                   for t in drawn if len(joined[t][1])}  # a task without test targets has nothing to draw
        for t, parts in examples.items():
            images, outputs, targets = (torch.cat(column) for column in zip(*parts)) if parts else ((),) * 3
            if len(images):
                records[f"{self.tasks[t].example_kind}@{t}"] = self.tasks[t].example_record(images, outputs, targets)
        return records

    # --- checkpoints -----------------------------------------------------------------------------
    def state_dict(self, epoch: int, rng: list[dict[str, Any]], metrics: dict[str, float]) -> TrainingState:
        """What a checkpoint after ``epoch`` holds."""
        return TrainingState(
            epoch=epoch, model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            weighting=self.weighting.state_dict(), best=self.best, rng=rng, config=self.config.model_dump(),
            structure=self.model.structure(), controller=self.controller.state_dict() if self.controller else {},
            affinity=self.affinity.state_dict() if self.affinity else {},
            sampler={"epoch": epoch + 1, "batches_done": 0}, global_step=self.global_step, metrics=metrics,
            image_shape=list(self.samples.image_shape),
        )

    def load_state_dict(self, state: TrainingState) -> None:
        """Continue from ``state``: reshape the model as it was, then load every part's state."""
        _check_compatible(state.config, self.config.model_dump())
        self.model.restore_structure(state.structure)
        self.optimizer = self._new_optimizer()  # over the restored shape's parameters
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.weighting.load_state_dict(state.weighting)
        if self.controller:
            self.controller.load_state_dict(state.controller)
        set_rng_state(state.rng[self.ctx.rank] if self.ctx.rank < len(state.rng) else state.rng[0])
        self.best, self.global_step = state.best, state.global_step
        self.start_epoch = state.sampler["epoch"]

    def _report(self, state: TrainingState) -> None:
        """Every rank reports; rank 0 attaches this epoch's checkpoint, with the model's and controller's
        records (JSON, and PNG where tracking draws them) in its ``artifacts/`` folder."""
        if not self.ctx.is_main:
            self.reporter.report(state.metrics, None)
            return
        with tempfile.TemporaryDirectory(prefix="distmtl-ckpt-") as directory:
            state.save(directory)
            records = {**self.model.diagnostics(), **(self.controller.diagnostics() if self.controller else {}),
                       **(self.affinity.record() if self.affinity else {}), **self.prediction_records}
            save_artifacts(records, Path(directory) / ARTIFACTS_DIR, state.epoch)
            self.reporter.report(state.metrics, directory)

    # --- helpers ---------------------------------------------------------------------------------
    def _batch(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        images, targets, masks = to_device(batch, self.ctx.device, self.config.train.channels_last)
        if RECONSTRUCTION in self.tasks:  # the clean (un-noised) input is the target
            targets[RECONSTRUCTION] = images
            masks[RECONSTRUCTION] = torch.ones(len(images), dtype=torch.bool, device=images.device)
        return images, targets, masks

    def _loss_terms(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                    masks: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {name: task.masked_loss_terms(outputs[name], targets[name], masks[name])
                for name, task in self.tasks.items()}

    def _losses_again(self, images: torch.Tensor, targets: dict[str, torch.Tensor],
                      masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This batch's per-task mean losses under the current weights (no gradients), for a weighting's
        ``after_step``."""
        with torch.no_grad(), self.autocast:
            outputs = self.net(images)
        terms = self._loss_terms(outputs, targets, masks)
        return {name: total / count.clamp(min=1) for name, (total, count) in terms.items()}

    def _new_optimizer(self) -> torch.optim.Optimizer:
        extra = list(self.weighting.parameters()) if self.weighting.optimised_with_model else []
        return build_optimizer(self.config.optim, self.model, extra)

    def _rebuild_optimizer(self) -> torch.optim.Optimizer:
        """A new optimizer over the model's current parameters; surviving parameters keep their state."""
        old, optimizer = self.optimizer, self._new_optimizer()
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param in old.state:
                    optimizer.state[param] = old.state[param]
        return optimizer

    def _wrap(self) -> nn.Module:
        """The model as the training step runs it, again after every change of its parameters: DDP around it when
        there are several ranks, or, for a weighting that reduces its own gradients, only rank 0's buffers
        broadcast before each forward pass; and, for a weighting that reads it, which parameters each task reaches."""
        self.reach = split_parameters(self.model, list(self.tasks), self.samples.image_shape, self.ctx.device) \
            if self.weighting.uses_split else ParameterSplit([], {})
        if self.ctx.world_size == 1:
            return self.model
        if self.weighting.reduces_gradients:
            return BufferSync(self.model, self.ctx)
        device = self.ctx.device
        unused = _has_unused_parameters(self.model, self.samples.image_shape, device)
        return DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=unused)

def train(config: Config, reporter: Reporter, ctx: DistContext | None = None,
          fault: InjectedFault | None = None) -> dict[str, float]:
    """Train ``config`` on this worker and return the last report (with test metrics at the best epoch)."""
    return Trainer(config, reporter, ctx, fault).fit()


def _check_compatible(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """A checkpoint resumes only a run of the same task set and architecture; name every difference."""
    differences = [f"{key}: checkpoint {read(saved)}, config {read(current)}"
                   for key, read in _MUST_MATCH.items() if read(saved) != read(current)]
    if differences:
        raise DistmtlError(f"the checkpoint is of another model ({'; '.join(differences)}); "
                           "resume with the config it was written by")


def _has_unused_parameters(model: MultiTaskModel, image_shape: tuple[int, ...], device: torch.device) -> bool:
    """Whether some trainable parameter gets no gradient from the task outputs (e.g. a bottleneck that
    only dense heads follow); DDP must then look for unused parameters every step, or it hangs."""
    model.eval()
    outputs = model(torch.zeros(2, *image_shape, device=device))
    sum(o.float().sum() for o in outputs.values()).backward()
    unused = any(p.requires_grad and p.grad is None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    return unused


def _flatten(split: str, losses: Losses, metrics: TaskMetrics, weights: dict[str, float]) -> dict[str, float]:
    """``{split}/loss`` (sum weighted by the static task weights), ``{split}/loss_unweighted`` (plain sum: no
    weight scales it, so a sweep over the weights can rank by it), ``{split}/{task}/loss`` and
    ``{split}/{task}/{metric}``."""
    flat = {f"{split}/loss": sum(weights[t] * v for t, v in losses.items()),
            f"{split}/loss_unweighted": sum(losses.values())}
    for task, loss in losses.items():
        flat[f"{split}/{task}/loss"] = loss
        flat.update({f"{split}/{task}/{name}": value for name, value in metrics[task].items()})
    return flat


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _summary(metrics: dict[str, Any], selection: str) -> str:
    keys = ["train/loss", "val/loss"] + ([selection] if selection != "val/loss" else [])
    keys += [k for k in ("val/delta_m", "test/delta_m") if k in metrics and k != selection]
    keys += [k for k in metrics if k.startswith("test/") and k.count("/") == 2 and not k.endswith("/loss")]
    return "  ".join(f"{k} {metrics[k]:.4g}" for k in keys)
