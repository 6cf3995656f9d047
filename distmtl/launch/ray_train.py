"""Run the engine on N Ray Train workers with DDP (gloo on CPU, NCCL on GPU).

Every worker imports this module to find :func:`worker_loop`, so it imports nothing a worker does not need
(MLflow lives on the Train controller: :mod:`distmtl.launch.epoch_logger`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, UserCallback
from ray.train.torch import TorchConfig, TorchTrainer

from distmtl.config.schema import Config
from distmtl.engine import DistContext, train
from distmtl.engine.divergence import TrainingDiverged
from distmtl.engine.faults import InjectedFault, fault_from_environment
from distmtl.errors import FAILURE_KEY
from distmtl.logs import configure_logging


@dataclass(frozen=True)
class Resources:
    """What one training run asks of the cluster; ``workers`` as (min, max) makes the run elastic."""

    workers: int | tuple[int, int] = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0


class RayReporter:
    """The engine's reporter inside a Ray Train worker.

    It resumes from Ray's latest checkpoint of this run (after a worker failure or a restart of
    the same run name), else from ``resume_from`` (a checkpoint directory the user named).
    """

    def __init__(self, resume_from: str | None = None) -> None:
        self.resume_from = resume_from
        self.continuing = False

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        checkpoint = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    @contextlib.contextmanager
    def restore_dir(self) -> Iterator[str | None]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield self.resume_from
            return
        self.continuing = True
        with checkpoint.as_directory() as directory:
            yield directory

    def resumed(self, metrics: dict[str, float]) -> None:
        """When this run continues itself (its worker group or its Tune trial restarted), report the checkpoint's
        epoch again: a driver that stopped may have missed it, and MLflow loggers skip epochs they hold. A run
        started from a checkpoint the user named begins with the next epoch."""
        if self.continuing:
            ray.train.report(metrics, checkpoint=None)


def worker_loop(payload: dict[str, Any]) -> dict[str, Any] | None:
    """Entry point of every Train worker: rebuild the config and run the engine under DDP. A run whose loss
    diverged returns ``{FAILURE_KEY: reason, "epoch": E}`` (``Result.return_value``) instead of raising, which
    Ray Train would retry from the last checkpoint only to diverge again."""
    configure_logging(logging.INFO)
    _quiet_report_log()
    config = Config.model_validate(payload["config"])
    device = torch.device("cpu") if config.train.device == "cpu" else ray.train.torch.get_device()
    fault = InjectedFault.parse(payload["fault"]) if payload.get("fault") else None
    try:
        train(config, RayReporter(payload.get("resume_from")), DistContext.current(device), fault)
    except TrainingDiverged as exc:  # every rank stops at the same step
        return {FAILURE_KEY: exc.reason, "epoch": exc.epoch}
    return None


def _quiet_report_log() -> None:
    """Keep warnings only on the worker's root logger. Ray Train sets it to INFO for the train function's own
    logging, and logs every report's whole metrics dict at INFO through a logger named after its source file,
    which only the root logger's level reaches (``LoggingConfig`` sets the ``ray.train`` loggers). distmtl logs
    through its own logger and prints a one-line summary per epoch."""
    logging.getLogger().setLevel(logging.WARNING)


def build_trainer(
    config: Config,
    resources: Resources,
    storage_path: str,
    name: str,
    callbacks: Sequence[UserCallback] = (),
    resume_from: str | None = None,
) -> TorchTrainer:
    """A TorchTrainer that runs ``config`` on ``resources.workers`` DDP workers, checkpointing to
    ``storage_path/name``; ``resume_from`` is a checkpoint directory every worker can read.

    When a worker dies, Ray Train restarts the worker group (up to ``train.max_failures`` times) and
    every worker resumes from the run's latest checkpoint.
    """
    use_gpu = resources.gpus_per_worker > 0
    per_worker = {"CPU": resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    return TorchTrainer(
        worker_loop,
        train_loop_config={"config": config.model_dump(), "resume_from": resume_from,
                           "fault": fault_from_environment()},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=config.train.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            callbacks=list(callbacks),
            logging_config=LoggingConfig(log_level="WARNING"),  # distmtl prints its own per-epoch line
        ),
    )
