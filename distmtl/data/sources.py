"""Registry of data sources: a name maps to a function that builds a :class:`SampleSet` from the data config."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from distmtl.config.schema import DataConfig
from distmtl.data.sample_set import SampleSet, TargetSpec
from distmtl.errors import ConfigError

SourceFn = Callable[[DataConfig], SampleSet]
_SOURCES: dict[str, SourceFn] = {}
_SPECS: dict[str, Callable[[], dict[str, TargetSpec]]] = {}


def register_source(name: str, specs: Callable[[], dict[str, TargetSpec]]) -> Callable[[SourceFn], SourceFn]:
    """Register a source builder under ``name``; ``specs`` lists its targets without building any data."""

    def decorator(fn: SourceFn) -> SourceFn:
        _SOURCES[name] = fn
        _SPECS[name] = specs
        return fn

    return decorator


def source_names() -> list[str]:
    """Names of all registered sources."""
    _load_builtin()
    return sorted(_SOURCES)


def source_targets(name: str) -> dict[str, TargetSpec]:
    """The targets a source offers (cheap: builds no data)."""
    _load_builtin()
    if name not in _SPECS:
        raise ConfigError(f"data.source: unknown source '{name}' (available: {', '.join(sorted(_SPECS))})")
    return _SPECS[name]()


def check_targets(source: str, tasks: list[str]) -> dict[str, TargetSpec]:
    """The specs of ``tasks`` in ``source``; a task the source lacks raises :class:`ConfigError`."""
    available = source_targets(source)
    missing = [t for t in tasks if t not in available]
    if missing:
        raise ConfigError(f"tasks: source '{source}' has no target {missing} (it offers: {', '.join(available)})")
    return {t: available[t] for t in tasks}


def build_samples(cfg: DataConfig, tasks: list[str]) -> SampleSet:
    """Build the configured source, keep ``tasks``, and mask out targets per ``cfg.target_fraction``."""
    check_targets(cfg.source, tasks)
    samples = _SOURCES[cfg.source](cfg).select_tasks(tasks)
    rng = np.random.default_rng(cfg.seed + 7919)
    for task, fraction in cfg.target_fraction.items():
        keep = torch.from_numpy(rng.random(len(samples)) < fraction)
        samples.has_target[task] = samples.has_target[task] & keep
    return samples


def _load_builtin() -> None:
    """Import the built-in sources so that their decorators run (lazily: nothing heavy at import time)."""
    import distmtl.data.synthetic  # noqa: F401
