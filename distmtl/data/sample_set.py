"""An in-memory multi-task sample set and the torch Dataset view over part of it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset


@dataclass(frozen=True)
class TargetSpec:
    """What one target is: its task kind and its size (classes for classification, dims for regression)."""

    kind: str
    size: int
    description: str = ""


@dataclass
class SampleSet:
    """Images (uint8, N×C×H×W), per-task targets and has-target masks, and each sample's original-image group."""

    images: torch.Tensor
    targets: dict[str, torch.Tensor]
    has_target: dict[str, torch.Tensor]
    groups: np.ndarray
    specs: dict[str, TargetSpec]
    class_names: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def select_tasks(self, tasks: list[str]) -> SampleSet:
        """Keep only the named tasks (the order given)."""
        return SampleSet(
            images=self.images,
            targets={t: self.targets[t] for t in tasks},
            has_target={t: self.has_target[t] for t in tasks},
            groups=self.groups,
            specs={t: self.specs[t] for t in tasks},
            class_names={t: v for t, v in self.class_names.items() if t in tasks},
        )


class MultiTaskDataset(Dataset):
    """Samples ``indices`` of a :class:`SampleSet` as ``{"image", "targets": {task}, "has_target": {task}}``.

    Images come out as float32 in [0, 1]; masks say which task targets a sample really carries.
    """

    def __init__(self, samples: SampleSet, indices: np.ndarray) -> None:
        self.samples = samples
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        j = int(self.indices[i])
        s = self.samples
        return {
            "image": s.images[j].float().div_(255.0),
            "targets": {t: v[j] for t, v in s.targets.items()},
            "has_target": {t: m[j] for t, m in s.has_target.items()},
        }


def split_by_group(
    groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split sample indices into train/val/test so that no original-image group spans two splits."""
    unique = np.unique(groups)
    rest, test_groups = train_test_split(unique, test_size=test_fraction, random_state=seed)
    train_groups, val_groups = train_test_split(
        rest, test_size=val_fraction / (1.0 - test_fraction), random_state=seed + 1
    )
    index = np.arange(len(groups))
    return tuple(index[np.isin(groups, g)] for g in (train_groups, val_groups, test_groups))  # type: ignore[return-value]
