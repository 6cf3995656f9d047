"""DataLoaders for one worker: a shuffled, rank-sharded training loader and unpadded evaluation shards."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from distmtl.config.schema import Config
from distmtl.data.augment import Augmenter
from distmtl.data.sample_set import Samples, collate
from distmtl.data.splits import cv_split, split_by_group
from distmtl.engine.context import DistContext


@dataclass
class Loaders:
    train: DataLoader
    sampler: Sampler
    val: DataLoader
    test: DataLoader


def build_loaders(
    config: Config, samples: Samples, splits: tuple[np.ndarray, np.ndarray, np.ndarray], ctx: DistContext
) -> Loaders:
    """Training data reshuffles every epoch (``sampler.set_epoch``) and each rank sees a disjoint part
    (chunk-aware for HDF5 stores); evaluation shards are contiguous slices per rank, without the
    padding a DistributedSampler adds, so that all-reduced metrics count every sample exactly once.
    Augmentation, when configured, applies to the training split only."""
    train_idx, val_idx, test_idx = splits
    common = dict(batch_size=config.data.batch_size, num_workers=config.data.loader_workers, collate_fn=collate,
                  pin_memory=ctx.device.type == "cuda", persistent_workers=config.data.loader_workers > 0)
    augment = Augmenter(config.data.augment, samples.specs) if config.data.augment.enabled else None
    train_set = samples.dataset(train_idx, augment)
    sampler = samples.train_sampler(train_set, ctx.rank, ctx.world_size, config.train.seed)
    shard = lambda idx: samples.dataset(np.array_split(idx, ctx.world_size)[ctx.rank])  # noqa: E731
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


def make_splits(config: Config, samples: Samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train/val/test indices: fold ``data.cv_fold`` of grouped cross-validation, else a random group split
    (the source's own test split when it has one)."""
    data = config.data
    if data.cv_fold is not None:
        return cv_split(samples.groups, data.cv_folds, data.cv_fold, data.seed)
    return split_by_group(samples.groups, data.val_fraction, data.test_fraction, data.seed, samples.test_mask)
