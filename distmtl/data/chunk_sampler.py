"""Chunk-aware shuffling for chunked HDF5: random order without reading a chunk per sample."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class ChunkShuffleSampler(Sampler[int]):
    """Each epoch: shuffle the order of the file's chunks, then the samples inside each chunk; then give
    rank r the r-th contiguous slice of that order, so every rank reads whole chunks.

    ``file_indices[p]`` is the file row behind dataset position ``p``; the sampler yields positions.
    The order is padded (by wrapping round) to a multiple of ``world_size`` so every rank runs the
    same number of steps, as DDP requires; without padding the ranks' slices are disjoint and
    together cover every position exactly once.
    """

    def __init__(self, file_indices: np.ndarray, chunk: int, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.chunk_of = np.asarray(file_indices) // chunk
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0
        self.per_rank = math.ceil(len(self.chunk_of) / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> np.ndarray:
        """This epoch's global order of positions (before padding and sharding)."""
        rng = np.random.default_rng((self.seed, self.epoch))
        by_row = np.argsort(self.chunk_of, kind="stable")  # positions grouped by chunk, ascending within each
        chunks, starts, counts = np.unique(self.chunk_of[by_row], return_index=True, return_counts=True)
        span = {c: by_row[s : s + n] for c, s, n in zip(chunks, starts, counts)}
        shuffled = rng.permutation(chunks)
        return np.concatenate([rng.permutation(span[c]) for c in shuffled]) if len(chunks) else np.empty(0, int)

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        padded = np.resize(order, self.per_rank * self.world_size) if len(order) else order
        return iter(padded[self.rank * self.per_rank : (self.rank + 1) * self.per_rank].tolist())

    def __len__(self) -> int:
        return self.per_rank
