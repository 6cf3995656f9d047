"""Compress the stacked per-task gradients with a tensor-train decomposition (tensorly)."""

from __future__ import annotations

import numpy as np
import tensorly as tl
from tensorly.decomposition import tensor_train


def task_factors(gradients: np.ndarray, rank: int) -> np.ndarray:
    """K task gradients (K×out×in) → K×r task factors, each row L2-normalised.

    The tensor-train decomposition with ranks (1, r, r, 1) factors the K×out×in tensor into cores
    (1×K×r), (r×out×r), (r×in×1); the first core gives every task an r-dimensional factor in one
    shared basis, so factors of different tasks are comparable. TT-SVD is deterministic.
    """
    k = gradients.shape[0]
    r = max(1, min(rank, k, int(np.prod(gradients.shape[1:]))))
    cores = tensor_train(tl.tensor(gradients.astype(np.float64)), rank=[1, r, r, 1])
    factors = tl.to_numpy(cores[0])[0]
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    return factors / np.where(norms > 0, norms, 1.0)
