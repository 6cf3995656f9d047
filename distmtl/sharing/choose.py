"""Choose task groupings from a K × K affinity matrix, as TAG does: the grouping whose members help one another most.

A grouping (a partition of the tasks into branches) is scored by the affinity each task receives from the other
members of its group, averaged over them, summed over the tasks; a task alone receives 0 (nothing helps it, nothing
hurts it). With ``A[i][j]`` the affinity of task i onto task j (the lookahead Z(i→j), or a symmetric signal such as
the gradient cosine):

    score(G) = Σ_j  mean_{i ∈ group(j), i ≠ j} A[i][j]

For K ≤ :data:`EXHAUSTIVE_UP_TO` tasks every partition is scored (the Bell number B(10) = 115,975 of them, as arrays
of group labels, in one vectorised pass). Beyond that the search is stated and approximate: for each number of groups,
greedy agglomeration (from singletons, always the merge that raises the score most; when the number of groups must
still fall and no merge raises it, the one that lowers it least) followed by hill climbing over single-task moves
between groups that keep the number of groups, until no move improves the score.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
from sympy.utilities.iterables import multiset_partitions

#: The largest task count whose partitions are all scored.
EXHAUSTIVE_UP_TO = 10

Grouping = list[list[str]]


def label_partitions(k: int) -> np.ndarray:
    """Every partition of ``k`` items as a row of group labels (N × k; labels 0 … groups−1, in order of first
    appearance), fewest groups first."""
    return _label_partitions(k).copy()


@lru_cache(maxsize=4)
def _label_partitions(k: int) -> np.ndarray:
    rows = []
    for groups in range(1, k + 1):
        for partition in multiset_partitions(list(range(k)), groups):
            labels = np.empty(k, dtype=np.int8)
            for label, group in enumerate(sorted(partition, key=min)):
                labels[list(group)] = label
            rows.append(labels)
    return np.stack(rows)


def scores(affinity: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The score of every grouping in ``labels`` (N × K group labels) under ``affinity`` (K × K, row = source)."""
    affinity = np.asarray(affinity, dtype=np.float64)
    k = affinity.shape[0]
    together = labels[:, :, None] == labels[:, None, :]  # N × K × K: i and j share a group
    together &= ~np.eye(k, dtype=bool)[None]
    partners = together.sum(axis=1)  # per task j: the other members of its group
    received = np.einsum("nij,ij->nj", together, affinity)
    return np.where(partners > 0, received / np.maximum(partners, 1), 0.0).sum(axis=1)


def score(affinity: np.ndarray, tasks: list[str], grouping: Grouping) -> float:
    """The score of one grouping of ``tasks`` (group members by name)."""
    return float(scores(affinity, to_labels(tasks, grouping)[None])[0])


def to_labels(tasks: list[str], grouping: Grouping) -> np.ndarray:
    """The group label of each task (in ``tasks`` order)."""
    label = {t: g for g, group in enumerate(grouping) for t in group}
    return np.array([label[t] for t in tasks], dtype=np.int8)


def to_grouping(tasks: list[str], labels: np.ndarray) -> Grouping:
    """The groups of ``labels``, each in task order, ordered by their first task."""
    groups: dict[int, list[str]] = {}
    for task, label in zip(tasks, labels.tolist()):
        groups.setdefault(label, []).append(task)
    return list(groups.values())


def best_groupings(affinity: np.ndarray, tasks: list[str],
                   group_counts: list[int]) -> dict[int, tuple[Grouping, float]]:
    """For each number of groups in ``group_counts``: the highest-scoring grouping into exactly that many groups,
    and its score (exhaustive for K ≤ :data:`EXHAUSTIVE_UP_TO`, else the stated search)."""
    if len(tasks) <= EXHAUSTIVE_UP_TO:
        labels = _label_partitions(len(tasks))
        found = scores(affinity, labels)
        sizes = labels.max(axis=1) + 1
        best = {}
        for n in group_counts:
            index = np.flatnonzero(sizes == n)
            top = index[int(np.argmax(found[index]))]
            best[n] = (to_grouping(tasks, labels[top]), float(found[top]))
        return best
    return {n: _searched(np.asarray(affinity, dtype=np.float64), tasks, n) for n in group_counts}


def ranked(affinity: np.ndarray, tasks: list[str], candidates: list[Grouping]) -> list[float]:
    """The score of each of ``candidates``."""
    return scores(affinity, np.stack([to_labels(tasks, g) for g in candidates])).tolist()


def _searched(affinity: np.ndarray, tasks: list[str], groups: int) -> tuple[Grouping, float]:
    """Greedy agglomeration to ``groups`` groups, then single-task moves while one raises the score."""
    labels = np.arange(len(tasks))
    while labels.max() + 1 > groups:
        candidates = list(_merges(labels))
        values = scores(affinity, np.stack(candidates))
        labels = candidates[int(np.argmax(values))]
    current = float(scores(affinity, labels[None])[0])
    while True:
        moves = [m for m in _moves(labels) if m.max() + 1 == groups]
        if not moves:
            break
        values = scores(affinity, np.stack(moves))
        if values.max() <= current + 1e-12:
            break
        labels, current = moves[int(np.argmax(values))], float(values.max())
    return to_grouping(tasks, labels), current


def _merges(labels: np.ndarray) -> Iterator[np.ndarray]:
    """Every grouping that joins two groups of ``labels`` (relabelled in order of first appearance)."""
    count = labels.max() + 1
    for a in range(count):
        for b in range(a + 1, count):
            yield _canonical(np.where(labels == b, a, labels))


def _moves(labels: np.ndarray) -> Iterator[np.ndarray]:
    """Every grouping that moves one task into another existing group."""
    count = labels.max() + 1
    for task in range(len(labels)):
        for target in range(count):
            if target != labels[task]:
                moved = labels.copy()
                moved[task] = target
                yield _canonical(moved)


def _canonical(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0, 1, … in order of first appearance."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    return order[inverse].astype(np.int8)
