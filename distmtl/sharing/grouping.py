"""Group tasks from their gradient factors with HDBSCAN, under one of three criteria.

With f_i the normalised factor of task i and cos(i, j) = f_i·f_j:

- ``similarity``: distance (1 − cos(i, j)) / 2 — tasks whose gradients point the same way are close;
- ``dissimilarity``: distance (1 + cos(i, j)) / 2 — tasks whose gradients oppose each other are
  close, so a branch learns from disagreeing supervision (more general features);
- ``variance``: the Euclidean distance of the factors after dividing every factor dimension by its
  spread across tasks (a standardised Euclidean metric), divided by the largest such distance:
  tasks group by where they sit relative to the between-task variance, which favours larger groups.

- ``affinity`` (from a K × K lookahead affinity Z, not from factors, :func:`affinity_distances`): each task's
  affinity from another, relative to its affinity from its own step, Z(i→j) / Z(j→j), symmetrised and clipped to
  [−1, 1]; distance (1 − that) / 2 — tasks whose steps help each other as much as their own are close.

All distances lie in [0, 1]. HDBSCAN then runs on the precomputed matrix with
``min_samples=1``, excess-of-mass selection, ``allow_single_cluster=True`` (with a handful of
tasks the whole set is often HDBSCAN's only candidate cluster) and ``cluster_selection_epsilon``
= ``epsilon``: clusters closer than ``epsilon`` are not split further. Label −1 (HDBSCAN's noise)
means "keep its own branch".

HDBSCAN's clusters are relative: with a handful of tasks, the ones left over after the densest
group often form a cluster of their own even when their gradients are unrelated. For
``similarity``, ``dissimilarity`` and ``affinity`` the distance 1/2 is a natural bound (cos = 0:
gradients neither agree nor oppose; no relative affinity: a task's step neither helps nor hurts the
other), so every cluster is pruned: while some member's mean distance to the other members is at
least 1/2, the farthest such member leaves (label −1); a cluster left smaller
than ``min_cluster_size`` dissolves. ``variance`` distances are relative by definition and are not
pruned.
"""

from __future__ import annotations

import hdbscan
import numpy as np
from scipy.spatial.distance import pdist, squareform

CRITERIA = ("similarity", "dissimilarity", "variance", "affinity")
NEUTRAL = {"similarity": 0.5, "dissimilarity": 0.5, "affinity": 0.5}  # orthogonal gradients; no relative affinity


def cosine_similarity(factors: np.ndarray) -> np.ndarray:
    """K×K cosine similarity of (already normalised) factors, clipped to [−1, 1]."""
    return np.clip(factors @ factors.T, -1.0, 1.0)


def distances(factors: np.ndarray, criterion: str) -> np.ndarray:
    """The K×K distance matrix HDBSCAN clusters for ``criterion``."""
    if criterion == "similarity":
        return (1.0 - cosine_similarity(factors)) / 2.0
    if criterion == "dissimilarity":
        return (1.0 + cosine_similarity(factors)) / 2.0
    if criterion == "variance":
        spread = factors.std(axis=0)
        matrix = squareform(pdist(factors / np.where(spread > 0, spread, 1.0)))
        return matrix / matrix.max() if matrix.max() > 0 else matrix
    raise ValueError(f"unknown criterion '{criterion}' (choose from {', '.join(CRITERIA)})")


def affinity_distances(affinity: np.ndarray) -> np.ndarray:
    """K × K distances in [0, 1] from a lookahead affinity matrix (row: the task whose step, column: the task whose
    loss): (1 − s) / 2, s the symmetric part of Z(i→j) / Z(j→j) clipped to [−1, 1] (0 for a task its own step does
    not help)."""
    affinity = np.asarray(affinity, dtype=np.float64)
    own = np.diag(affinity)
    relative = np.where(own[None, :] > 0, affinity / np.where(own > 0, own, 1.0)[None, :], 0.0)
    return (1.0 - np.clip((relative + relative.T) / 2, -1.0, 1.0)) / 2


def group_tasks(factors: np.ndarray, criterion: str, min_cluster_size: int, epsilon: float = 0.25,
                matrix: np.ndarray | None = None) -> np.ndarray:
    """A cluster label per task (−1: no group), from the tasks' ``factors`` under ``criterion``, or from a distance
    ``matrix`` given as is (``affinity``)."""
    if len(factors) < max(2, min_cluster_size):
        return np.full(len(factors), -1)
    matrix = np.ascontiguousarray(distances(factors, criterion) if matrix is None else matrix, dtype=np.float64)
    np.fill_diagonal(matrix, 0.0)
    clusterer = hdbscan.HDBSCAN(metric="precomputed", min_cluster_size=min_cluster_size, min_samples=1,
                                cluster_selection_method="eom", allow_single_cluster=True,
                                cluster_selection_epsilon=epsilon)
    labels = clusterer.fit_predict(np.maximum(matrix, 0.0))
    return prune(labels, matrix, NEUTRAL[criterion], min_cluster_size) if criterion in NEUTRAL else labels


def prune(labels: np.ndarray, matrix: np.ndarray, bound: float, min_cluster_size: int) -> np.ndarray:
    """``labels`` with every cluster reduced to members whose mean distance to the others is below ``bound``.

    The member farthest on average leaves first, one at a time (its departure changes the others'
    means); a cluster smaller than ``min_cluster_size`` afterwards dissolves into −1 labels.
    """
    labels = labels.copy()
    for cluster in sorted(set(labels.tolist()) - {-1}):
        members = [int(i) for i in np.flatnonzero(labels == cluster)]
        while len(members) >= 2:
            block = matrix[np.ix_(members, members)]
            mean = block.sum(axis=1) / (len(members) - 1)
            worst = int(np.argmax(mean))
            if mean[worst] < bound:
                break
            labels[members.pop(worst)] = -1
        if len(members) < min_cluster_size:
            labels[members] = -1
    return labels
