"""Train/validation/test splits that never put one original image (group) in two splits."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupKFold, train_test_split


def split_by_group(
    groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int, test_mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random group split; with ``test_mask`` (a source's own test set) those samples are the test split."""
    index = np.arange(len(groups))
    if test_mask is not None:
        test = index[test_mask]
        rest_groups = np.unique(groups[~test_mask])
        train_groups, val_groups = train_test_split(rest_groups, test_size=val_fraction, random_state=seed + 1)
        return index[np.isin(groups, train_groups) & ~test_mask], index[np.isin(groups, val_groups) & ~test_mask], test
    unique = np.unique(groups)
    rest, test_groups = train_test_split(unique, test_size=test_fraction, random_state=seed)
    train_groups, val_groups = train_test_split(rest, test_size=val_fraction / (1.0 - test_fraction),
                                                random_state=seed + 1)
    return tuple(index[np.isin(groups, g)] for g in (train_groups, val_groups, test_groups))  # type: ignore[return-value]


def fold_assignment(groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of every sample: groups shuffled with ``seed``, then balanced by GroupKFold."""
    fold_of = np.empty(len(groups), dtype=np.int64)
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(groups)), groups=groups)):
        fold_of[test] = fold
    return fold_of


def cv_split(groups: np.ndarray, folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cross-validation split ``fold``: fold i is the test set, fold i+1 (mod K) validation, the rest training."""
    fold_of = fold_assignment(groups, folds, seed)
    index = np.arange(len(groups))
    val_fold = (fold + 1) % folds
    return index[(fold_of != fold) & (fold_of != val_fold)], index[fold_of == val_fold], index[fold_of == fold]
