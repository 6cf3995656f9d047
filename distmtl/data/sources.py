"""Registry of data sources: a name maps to a builder (config → sample set) and a cheap target listing.

The sources register themselves in their modules; ``distmtl.data`` imports them all.

File-based sources read the real on-disk formats from ``data.root``; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from distmtl.config.schema import DataConfig
from distmtl.data.sample_set import Samples, TargetSpec
from distmtl.errors import ConfigError, DistmtlError
from distmtl.registry import Registry

SourceFn = Callable[[DataConfig], Samples]
SpecsFn = Callable[[DataConfig], dict[str, TargetSpec]]


class Source(NamedTuple):
    """A data source: ``build`` loads the samples, ``targets`` lists them without loading the data, and
    ``verify`` (optional) reads its files in about a second, so a damaged one fails before anything starts."""

    build: SourceFn
    targets: SpecsFn
    verify: Callable[[DataConfig], None] | None = None


SOURCES: Registry[Source] = Registry("source", "data.source")


def register_source(name: str, specs: SpecsFn,
                    verify: Callable[[DataConfig], None] | None = None) -> Callable[[SourceFn], SourceFn]:
    """Register a source builder under ``name``; ``specs(cfg)`` lists its targets without loading the data;
    ``verify(cfg)`` checks its files quickly (see :class:`Source`)."""

    def decorator(fn: SourceFn) -> SourceFn:
        SOURCES.register(name)(Source(fn, specs, verify))
        return fn

    return decorator


def source_targets(cfg: DataConfig) -> dict[str, TargetSpec]:
    """The targets the configured source offers (cheap: reads at most metadata)."""
    return SOURCES.get(cfg.source).targets(cfg)


#: Targets every source offers because they are derived from the image itself.
RECONSTRUCTION = "reconstruction"


def check_targets(cfg: DataConfig, tasks: list[str]) -> dict[str, TargetSpec]:
    """The specs of ``tasks`` in the configured source (plus ``reconstruction``, which every source
    offers: its target is the input image); a task the source lacks raises :class:`ConfigError`."""
    available = {**source_targets(cfg), RECONSTRUCTION: TargetSpec("reconstruction", 0, "the input image")}
    missing = [t for t in tasks if t not in available]
    if missing:
        raise ConfigError(f"tasks: source '{cfg.source}' has no target {missing} (it offers: {', '.join(available)})")
    return {t: available[t] for t in tasks}


def check_source_files(cfg: DataConfig) -> None:
    """Raise :class:`DistmtlError` if a file the configured source (or any part of a ``combined`` source) reads
    is missing or damaged, where the source can tell in about a second; the others' files are read by the
    workers (``hdf5`` and ``omniglot`` already read theirs when listing their targets)."""
    parts = [cfg.model_copy(update={"source": p.source, "root": p.root, "parts": []}) for p in cfg.parts] or [cfg]
    for part in parts:
        verify = SOURCES.get(part.source).verify
        if verify:
            verify(part)


def build_source(cfg: DataConfig) -> Samples:
    """Build the configured source with all its targets."""
    return SOURCES.get(cfg.source).build(cfg)


def build_samples(cfg: DataConfig, tasks: list[str]) -> Samples:
    """Build the configured source, keep ``tasks``, and mask out targets per ``cfg.target_fraction``."""
    check_targets(cfg, tasks)
    samples = build_source(cfg).select_tasks([t for t in tasks if t != RECONSTRUCTION])
    rng = np.random.default_rng(cfg.seed + 7919)
    for task, fraction in cfg.target_fraction.items():
        keep = torch.from_numpy(rng.random(len(samples)) < fraction)
        samples.has_target[task] = samples.has_target[task] & keep
    return samples


def require_root(cfg: DataConfig, expected: str) -> Path:
    """``data.root`` as a Path, or a one-line error saying what the source expects there."""
    if not cfg.root:
        raise ConfigError(f"data.root: source '{cfg.source}' reads files; set data.root to {expected}")
    root = Path(cfg.root).expanduser()
    if not root.exists():
        raise DistmtlError(f"data.root: {root} does not exist (source '{cfg.source}' expects {expected})")
    return root


def subset(cfg: DataConfig, n: int) -> np.ndarray:
    """Row indices to keep: all, or a seeded random ``cfg.num_samples`` of them (in file order)."""
    if cfg.num_samples is None or cfg.num_samples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.num_samples, replace=False))


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 N×C×H×W → N×C×size×size (bilinear, antialiased when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Integer N×H×W label maps → N×size×size (nearest neighbour, labels preserved)."""
    if masks.shape[-2:] == (size, size):
        return masks
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()


def one_vs_all(labels: torch.Tensor, names: list[str], prefix: str) -> tuple[dict, dict]:
    """Binary targets ``{prefix}{name}`` (1 where ``labels == i``) and their specs: a homogeneous problem."""
    targets = {f"{prefix}{name}": (labels == i).long() for i, name in enumerate(names)}
    specs = {t: TargetSpec("binary", 1, f"one-vs-all: {t}") for t in targets}
    return targets, specs


def all_present(targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Has-target masks for targets every sample carries."""
    return {t: torch.ones(len(v), dtype=torch.bool) for t, v in targets.items()}
