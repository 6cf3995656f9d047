"""Rank 0's epoch-end decision: summed task gradients → tensor-train factors → HDBSCAN groups → merge plan."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from distmtl.sharing.factorise import task_factors
from distmtl.sharing.grouping import affinity_distances, cosine_similarity, group_tasks
from distmtl.sharing.plan import MergePlan, plan_merges


class GroupingSettings(Protocol):
    """The settings a decision reads (Selective Sharing's ``model.selective`` keys)."""

    tt_rank: int
    criterion: str
    min_cluster_size: int
    epsilon: float
    merge: str


def decide(gradients: np.ndarray, tasks: list[str], branch_of: dict[str, str], losses: dict[str, float],
           cfg: GroupingSettings) -> MergePlan:
    """The merge plan for ``gradients`` (K × branch-point shape, one per task in ``tasks``' order) under
    ``cfg``; a convolution's gradient (out×in×h×w) is read as out × (in·h·w)."""
    factors = task_factors(gradients.reshape(gradients.shape[0], gradients.shape[1], -1), cfg.tt_rank)
    labels = dict(zip(tasks, (int(v) for v in group_tasks(factors, cfg.criterion, cfg.min_cluster_size, cfg.epsilon))))
    return MergePlan(labels=labels, merges=plan_merges(labels, branch_of, losses, cfg.merge),
                     similarity=cosine_similarity(factors).tolist())


def decide_from_affinity(affinity: np.ndarray, tasks: list[str], branch_of: dict[str, str], losses: dict[str, float],
                         cfg: GroupingSettings) -> MergePlan:
    """The merge plan for a K × K lookahead ``affinity`` (row: the task whose step; tasks in ``tasks``' order):
    HDBSCAN on :func:`~distmtl.sharing.grouping.affinity_distances`, pruned at the neutral distance 1/2."""
    matrix = affinity_distances(affinity)
    labels = dict(zip(tasks, (int(v) for v in group_tasks(matrix, "affinity", cfg.min_cluster_size, cfg.epsilon,
                                                           matrix=matrix))))
    return MergePlan(labels=labels, merges=plan_merges(labels, branch_of, losses, cfg.merge),
                     similarity=(1.0 - 2.0 * matrix).tolist())
