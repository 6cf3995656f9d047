"""Compress the stacked per-task gradients with a tensor-train decomposition (tensorly)."""

from __future__ import annotations

import numpy as np
import tensorly as tl
from tensorly.decomposition import tensor_train


def task_factors(gradients: np.ndarray, rank: int) -> np.ndarray:
    """K task gradients (K×out×in) → K×r task factors, each row L2-normalised.

    The tensor-train decomposition with ranks (1, r, r, 1) factors the K×out×in tensor into cores
    G1 (1×K×r), G2 (r×out×r), G3 (r×in×1). TT-SVD leaves G1 with orthonormal columns and pushes the
    magnitudes into G2·G3, so G1's rows alone are not comparable: with r = K − 1 their cosines only
    reflect the least important singular direction, with r ≥ K they are orthogonal whatever the
    gradients. Each task's factor is therefore its row of G1 times a square root of R·Rᵀ, where R
    (r × out·in) is G2·G3 contracted: factor_i · factor_j then equals the inner product of the two
    tasks' rank-r reconstructed gradients, so factor cosines are gradient cosines in the shared
    rank-r basis. TT-SVD is deterministic.
    """
    k = gradients.shape[0]
    r = max(1, min(rank, k, int(np.prod(gradients.shape[1:]))))
    cores = [tl.to_numpy(c) for c in tensor_train(tl.tensor(gradients.astype(np.float64)), rank=[1, r, r, 1])]
    first = cores[0][0]
    rest = np.einsum("aob,bi->aoi", cores[1], cores[2][:, :, 0]).reshape(first.shape[1], -1)
    values, vectors = np.linalg.eigh(rest @ rest.T)
    factors = first @ (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    return factors / np.where(norms > 0, norms, 1.0)
