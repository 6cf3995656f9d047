"""The per-worker training engine. It imports no Ray: it runs in a plain process, under torchrun,
or inside a Ray Train worker, given a config, a reporter and a distributed context."""

from distmtl.engine.context import DistContext
from distmtl.engine.reporter import LocalReporter, Reporter
from distmtl.engine.trainer import train

__all__ = ["DistContext", "LocalReporter", "Reporter", "train"]
