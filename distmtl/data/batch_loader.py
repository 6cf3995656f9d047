"""Loaders over datasets that read whole batches at once (HDF5 stores). The batch sampler runs in this
process and each batch's positions go to one DataLoader worker (or this process), whose dataset reads
the batch with a few slice reads and returns it as numpy arrays: uint8 images travel to this process in
one pickled message, a quarter of the float bytes and without the shared-memory segment each tensor
would take. Here the batch becomes the engine's tensors, its images float in [0, 1] written straight
into pinned memory when batches go to CUDA."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler


@runtime_checkable
class BatchReadable(Protocol):
    """A dataset that reads many positions as one batch: ``{"image", "targets": {task}, "has_target": {task}}``
    of numpy arrays or tensors, the image uint8 (to be scaled here) or already float."""

    def __len__(self) -> int: ...

    def read_batch(self, positions: Sequence[int]) -> dict: ...


class _Batches(Dataset):
    """``view[positions]`` is ``dataset.read_batch(positions)``: what a batch sampler's list of positions maps to."""

    def __init__(self, dataset: BatchReadable) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, positions: Sequence[int]) -> dict:
        return self.dataset.read_batch(positions)


def _as_read(batch: dict) -> dict:
    """Collation of a batch that is already whole: keep it as the dataset read it."""
    return batch


def to_tensors(batch: dict, pin_memory: bool = False) -> dict:
    """A read batch as the engine's tensors, the same values default collation of its samples gives:
    uint8 images become float in [0, 1] in one single-threaded numpy pass (a batch-sized torch conversion
    goes to its thread pool, which loses to one core when the cores are busy)."""
    image = batch["image"]
    if isinstance(image, np.ndarray) and image.dtype == np.uint8:
        scaled = torch.empty(image.shape, dtype=torch.float32, pin_memory=pin_memory)
        np.divide(image, np.float32(255.0), out=scaled.numpy(), dtype=np.float32)
    else:
        scaled = _tensor(image, pin_memory)
    return {"image": scaled,
            "targets": {t: _tensor(v, pin_memory) for t, v in batch["targets"].items()},
            "has_target": {t: _tensor(m, pin_memory) for t, m in batch["has_target"].items()}}


def _tensor(value: np.ndarray | torch.Tensor, pin_memory: bool) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    return tensor.pin_memory() if pin_memory and not tensor.is_pinned() else tensor


class BatchLoader:
    """Batches of a :class:`BatchReadable` dataset in ``sampler``'s order: a DataLoader fetches the read
    batches (from its workers, if any; persistent, so each keeps its open file between epochs) and they
    become tensors in the iterating process."""

    def __init__(self, dataset: BatchReadable, batch_size: int, sampler: Sampler | None = None, workers: int = 0,
                 pin_memory: bool = False) -> None:
        batches = BatchSampler(sampler if sampler is not None else SequentialSampler(dataset), batch_size,
                               drop_last=False)
        self.loader = DataLoader(_Batches(dataset), sampler=batches, batch_size=None, collate_fn=_as_read,
                                 num_workers=workers, persistent_workers=workers > 0)
        self.pin_memory = pin_memory

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        return (to_tensors(batch, self.pin_memory) for batch in self.loader)


def make_loader(dataset: Dataset, batch_size: int, sampler: Sampler | None = None, workers: int = 0,
                pin_memory: bool = False) -> DataLoader | BatchLoader:
    """Batches of ``batch_size`` in ``sampler``'s order (sequential if None), the last one short: a
    :class:`BatchLoader` for batch-readable datasets, else a DataLoader that collates samples."""
    if isinstance(dataset, BatchReadable):
        return BatchLoader(dataset, batch_size, sampler, workers, pin_memory)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0)
