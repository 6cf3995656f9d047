"""The per-worker training engine. It imports no Ray: it runs in a plain process, under torchrun,
or inside a Ray Train worker, given a config, a reporter and a distributed context."""

from distmtl.engine import selective  # noqa: F401  (registers Selective Sharing's structure controller)
from distmtl.engine.assembly import check_config
from distmtl.engine.context import DistContext
from distmtl.engine.reporter import LocalReporter, Reporter
from distmtl.engine.trainer import Trainer, train

__all__ = ["DistContext", "LocalReporter", "Reporter", "Trainer", "check_config", "train"]
