"""The Pareto set of a multi-objective sweep: the trials that no other finished trial dominates."""

from __future__ import annotations

import math
from collections.abc import Sequence


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` on every objective and better on one (``modes``: min/max)."""
    signed = [(x, y) if m == "max" else (-x, -y) for x, y, m in zip(a, b, modes)]
    return all(x >= y for x, y in signed) and any(x > y for x, y in signed)


def pareto_front(points: dict[str, Sequence[float]], modes: Sequence[str]) -> list[str]:
    """The keys of ``points`` (trial id → objective values) that no other point dominates; points with a
    missing or non-finite value take no part."""
    finite = {k: v for k, v in points.items() if len(v) == len(modes) and all(math.isfinite(x) for x in v)}
    return [k for k, v in finite.items() if not any(dominates(w, v, modes) for j, w in finite.items() if j != k)]
