"""Aggregates of repeated runs (seeds or folds), computed in one place so that every table agrees with
the per-run metrics it summarises: mean, sample standard deviation, count, and a paired comparison of
two variants that were run on the same seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import ttest_rel


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1; nan for fewer than two values) and count of a metric."""

    mean: float
    std: float
    n: int

    def cell(self, digits: int = 3) -> str:
        """``"mean ± std"``; the mean alone when there is no spread to report (n = 1); empty when n = 0."""
        if self.n == 0:
            return ""
        if math.isnan(self.std):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass(frozen=True)
class Paired:
    """A paired comparison ``a − b`` over shared seeds: mean difference, Student's t and two-sided p
    (``scipy.stats.ttest_rel``; nan for fewer than two pairs)."""

    mean_difference: float
    t: float
    p: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    """The :class:`Summary` of ``values``; NaN values (a metric a run did not produce) are left out of it."""
    kept = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(kept) == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(np.std(kept, ddof=1)) if len(kept) > 1 else math.nan
    return Summary(float(np.mean(kept)), std, len(kept))


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """Compare ``a`` with ``b``, element i of each from the same seed (or fold)."""
    if len(a) != len(b):
        raise ValueError(f"a paired comparison needs as many values on each side (got {len(a)} and {len(b)})")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2:
        return Paired(float(np.mean(x - y)) if len(x) else math.nan, math.nan, math.nan, len(x))
    result = ttest_rel(x, y)
    return Paired(float(np.mean(x - y)), float(result.statistic), float(result.pvalue), len(x))
