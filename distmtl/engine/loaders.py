"""DataLoaders for one worker: a shuffled, rank-sharded training loader and unpadded evaluation shards."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from distmtl.config.schema import Config
from distmtl.data.sample_set import MultiTaskDataset, SampleSet
from distmtl.engine.context import DistContext


@dataclass
class Loaders:
    train: DataLoader
    sampler: DistributedSampler
    val: DataLoader
    test: DataLoader


def build_loaders(
    config: Config, samples: SampleSet, splits: tuple[np.ndarray, np.ndarray, np.ndarray], ctx: DistContext
) -> Loaders:
    """Training data reshuffles every epoch (``sampler.set_epoch``) and each rank sees a disjoint part;
    evaluation shards are ``indices[rank::world_size]``, without the padding DistributedSampler adds,
    so that all-reduced metrics count every sample exactly once."""
    train_idx, val_idx, test_idx = splits
    pin = ctx.device.type == "cuda"
    common = dict(batch_size=config.data.batch_size, num_workers=config.data.loader_workers, pin_memory=pin,
                  persistent_workers=config.data.loader_workers > 0)
    train_set = MultiTaskDataset(samples, train_idx)
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=config.train.seed)
    shard = lambda idx: MultiTaskDataset(samples, idx[ctx.rank :: ctx.world_size])  # noqa: E731
    return Loaders(
        train=DataLoader(train_set, sampler=sampler, **common),
        sampler=sampler,
        val=DataLoader(shard(val_idx), shuffle=False, **common),
        test=DataLoader(shard(test_idx), shuffle=False, **common),
    )


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> tuple:
    """Move a collated batch to ``device`` (non-blocking) as (images, targets, masks)."""
    images = batch["image"].to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = {t: v.to(device, non_blocking=True) for t, v in batch["targets"].items()}
    masks = {t: m.to(device, non_blocking=True) for t, m in batch["has_target"].items()}
    return images, targets, masks
