"""The hypervolume of a Pareto sweep's front: the size of the objective region its trials dominate, bounded by a
reference point, one number that grows whenever a trial extends or improves the front.

The reference point is the space's ``reference_point`` (one value per metric, in the metrics' own units) or,
when the space gives none, derived from the finished trials: each objective's worst value, moved outwards by
:data:`MARGIN` of the trials' range on it (of the value's magnitude, or 1, when every trial has the same value),
so that every trial counts. A derived point moves outwards as worse trials finish, which only adds volume, but
figures from two sweeps compare only under one stated point. The volume itself is moocore's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: How far a derived reference point lies beyond the worst finished trial, as a fraction of the trials' range.
MARGIN = 0.1


def derived_reference(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[float]:
    """Per objective, the worst of ``points`` moved outwards by :data:`MARGIN` of their range (see the module)."""
    values = np.asarray(points, dtype=float)
    reference = []
    for column, mode in zip(values.T, modes):
        worst = column.min() if mode == "max" else column.max()
        spread = (column.max() - column.min()) or abs(worst) or 1.0
        reference.append(float(worst - MARGIN * spread if mode == "max" else worst + MARGIN * spread))
    return reference


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float], modes: Sequence[str]) -> float:
    """The volume that ``points`` dominate up to ``reference`` (objectives minimised or maximised per ``modes``);
    points not strictly better than the reference on every objective add nothing."""
    import moocore

    values = np.asarray([p for p in points if all(math.isfinite(x) for x in p)], dtype=float)
    if not len(values):
        return 0.0
    return float(moocore.hypervolume(values, ref=np.asarray(reference, dtype=float),
                                     maximise=[m == "max" for m in modes]))


def front_hypervolume(points: Sequence[Sequence[float]], modes: Sequence[str],
                      reference: Sequence[float] | None = None) -> tuple[float, list[float]] | None:
    """(hypervolume, the reference point it used) of the finite ``points``, from ``reference`` or one derived
    from them; None when no point is finite."""
    finite = [list(p) for p in points if all(math.isfinite(x) for x in p)]
    if not finite:
        return None
    used = list(reference) if reference is not None else derived_reference(finite, modes)
    return hypervolume(finite, used, modes), used


def hypervolume_metrics(volume: float, reference: Sequence[float], metrics: Sequence[str]) -> dict[str, float]:
    """The hypervolume and its reference point as metrics of a sweep's parent run."""
    return {"pareto/hypervolume": volume, **{f"pareto/reference/{m}": v for m, v in zip(metrics, reference)}}


def describe_hypervolume(volume: float, reference: Sequence[float], metrics: Sequence[str], stated: bool) -> str:
    """``hypervolume 0.123 from reference point m1 0, m2 0 (stated in the space)``, for the console and pareto.md."""
    point = ", ".join(f"{m} {v:.4g}" for m, v in zip(metrics, reference))
    origin = "stated in the space" if stated else "derived from the finished trials"
    return f"hypervolume {volume:.4g} from reference point {point} ({origin})"
