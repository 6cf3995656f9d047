"""Read a file source's files in the driver before anything starts, where that takes about a second.

A damaged file then fails with one line before Ray starts, instead of in every Train worker a
minute later. Sources whose target listing already reads their files (``hdf5``, ``omniglot``)
are checked by :func:`distmtl.data.sources.check_targets`.
"""

from __future__ import annotations

from collections.abc import Callable

from distmtl.config.schema import DataConfig
from distmtl.data import cifar100

_CHECKS: dict[str, Callable[[DataConfig], None]] = {"cifar100": cifar100.check_files}


def check_source_files(cfg: DataConfig) -> None:
    """Raise :class:`~distmtl.errors.DistmtlError` if a file the configured source (or any part of a
    ``combined`` source) reads is missing or damaged."""
    parts = [cfg.model_copy(update={"source": p.source, "root": p.root, "parts": []}) for p in cfg.parts] or [cfg]
    for part in parts:
        if part.source in _CHECKS:
            _CHECKS[part.source](part)
