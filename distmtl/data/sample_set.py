"""Sample sets: what a data source provides to the engine, in memory (:class:`SampleSet`) or
streamed from HDF5 (:class:`distmtl.data.hdf5_store.H5SampleSet`).

Both hold the small per-sample metadata in memory (has-target masks, groups, the optional
predefined test split) and make torch Datasets over index subsets that yield
``{"image": float C×H×W in [0, 1], "targets": {task}, "has_target": {task}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler, default_collate


@dataclass(frozen=True)
class TargetSpec:
    """What one target is: its task kind and its size (classes for classification, dims for regression)."""

    kind: str
    size: int
    description: str = ""


class Samples(Protocol):
    """What the engine needs of any sample set."""

    specs: dict[str, TargetSpec]
    has_target: dict[str, torch.Tensor]
    groups: np.ndarray
    test_mask: np.ndarray | None

    def __len__(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    def dataset(self, indices: np.ndarray, augment=None) -> Dataset: ...

    def train_sampler(self, dataset: Dataset, rank: int, world_size: int, seed: int) -> Sampler: ...


@dataclass
class SampleSet:
    """Images (uint8, N×C×H×W), per-task targets and has-target masks, each sample's original-image group,
    and optionally a predefined test split (``test_mask``, e.g. CIFAR's test batch)."""

    images: torch.Tensor
    targets: dict[str, torch.Tensor]
    has_target: dict[str, torch.Tensor]
    groups: np.ndarray
    specs: dict[str, TargetSpec]
    class_names: dict[str, list[str]] = field(default_factory=dict)
    test_mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def select_tasks(self, tasks: list[str]) -> SampleSet:
        """Keep only the named tasks (the order given)."""
        return SampleSet(
            images=self.images,
            targets={t: self.targets[t] for t in tasks},
            has_target={t: self.has_target[t] for t in tasks},
            groups=self.groups,
            specs={t: self.specs[t] for t in tasks},
            class_names={t: v for t, v in self.class_names.items() if t in tasks},
            test_mask=self.test_mask,
        )

    def dataset(self, indices: np.ndarray, augment=None) -> Dataset:
        return MultiTaskDataset(self, indices, augment)

    def train_sampler(self, dataset: Dataset, rank: int, world_size: int, seed: int) -> Sampler:
        """Shuffled each epoch (``set_epoch``), a disjoint share per rank."""
        return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)


class MultiTaskDataset(Dataset):
    """Samples ``indices`` of an in-memory :class:`SampleSet`, optionally augmented."""

    def __init__(self, samples: SampleSet, indices: np.ndarray, augment=None) -> None:
        self.samples = samples
        self.indices = np.asarray(indices, dtype=np.int64)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        j = int(self.indices[i])
        s = self.samples
        return make_item(s.images[j], {t: v[j] for t, v in s.targets.items()},
                         {t: m[j] for t, m in s.has_target.items()}, self.augment)

    def read_batch(self, positions: Sequence[int]) -> dict:
        """The samples at ``positions`` in one indexing per array (uint8 images, scaled where the batch is
        consumed: :func:`distmtl.data.batch_loader.to_tensors`); augmented sets go sample by sample."""
        if self.augment is not None:
            return default_collate([self[i] for i in positions])
        rows = torch.from_numpy(self.indices[np.asarray(positions, dtype=np.int64)])
        s = self.samples
        return {"image": s.images[rows].numpy(), "targets": {t: v[rows].numpy() for t, v in s.targets.items()},
                "has_target": {t: m[rows].numpy() for t, m in s.has_target.items()}}


def make_item(image: torch.Tensor, targets: dict, has_target: dict, augment=None) -> dict:
    """One sample as the engine consumes it (uint8 image → float in [0, 1]; augmentation if given)."""
    item = {"image": image.float().div_(255.0), "targets": targets, "has_target": has_target}
    return augment(item) if augment is not None else item
