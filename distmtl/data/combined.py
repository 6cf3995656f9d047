"""Several sources in one run, where tasks cover different sources.

Example: classification examples from ``digits`` and coordinate-labelled examples from the
generator. Every part contributes its samples; a task a part does not provide is masked out for
that part's samples. Images are brought to one channel count (grey → RGB when any part is RGB)
at ``data.image_size``. Groups stay distinct across parts; the split is a random group split
(the parts' own test splits are not used).
"""

from __future__ import annotations

import numpy as np
import torch

from distmtl.config.schema import DataConfig, DataPart
from distmtl.data.sample_set import SampleSet, TargetSpec
from distmtl.data.sources import build_source, register_source, source_targets
from distmtl.errors import ConfigError


def _part_config(cfg: DataConfig, part: DataPart) -> DataConfig:
    return cfg.model_copy(update={"source": part.source, "root": part.root, "num_samples": part.num_samples,
                                  "parts": []})


def _part_specs(cfg: DataConfig, index: int, part: DataPart) -> dict[str, TargetSpec]:
    if part.source == "combined":
        raise ConfigError(f"data.parts.{index}.source: a part cannot itself be 'combined'")
    specs = source_targets(_part_config(cfg, part))
    missing = [t for t in part.tasks or [] if t not in specs]
    if missing:
        raise ConfigError(f"data.parts.{index}.tasks: source '{part.source}' has no target {missing} "
                          f"(it offers: {', '.join(specs)})")
    return {t: specs[t] for t in part.tasks or specs}


def combined_specs(cfg: DataConfig) -> dict[str, TargetSpec]:
    """The union of the parts' targets; one name must mean the same kind and size in every part."""
    union: dict[str, TargetSpec] = {}
    for index, part in enumerate(cfg.parts):
        for task, spec in _part_specs(cfg, index, part).items():
            known = union.setdefault(task, spec)
            if (known.kind, known.size) != (spec.kind, spec.size):
                raise ConfigError(f"data.parts.{index}: task '{task}' is {spec.kind}/{spec.size} here but "
                                  f"{known.kind}/{known.size} in an earlier part")
    return union


@register_source("combined", combined_specs)
def combined_source(cfg: DataConfig) -> SampleSet:
    specs = combined_specs(cfg)
    parts = [build_source(_part_config(cfg, p)).select_tasks(list(_part_specs(cfg, i, p)))
             for i, p in enumerate(cfg.parts)]
    channels = max(p.image_shape[0] for p in parts)
    templates = {t: next(p.targets[t] for p in parts if t in p.targets) for t in specs}
    images, targets, has_target, groups, offset = [], {t: [] for t in specs}, {t: [] for t in specs}, [], 0
    for part in parts:
        n = len(part)
        images.append(part.images.expand(-1, channels, -1, -1) if part.image_shape[0] < channels else part.images)
        for task, template in templates.items():
            present = task in part.targets
            targets[task].append(part.targets[task] if present else template.new_zeros((n, *template.shape[1:])))
            has_target[task].append(part.has_target[task] if present else torch.zeros(n, dtype=torch.bool))
        groups.append(np.asarray(part.groups) + offset)
        offset += int(np.max(part.groups)) + 1 if n else 0
    class_names = {t: names for p in parts for t, names in p.class_names.items()}
    return SampleSet(torch.cat(images), {t: torch.cat(v) for t, v in targets.items()},
                     {t: torch.cat(v) for t, v in has_target.items()}, np.concatenate(groups), specs, class_names)
