"""Grouped K-fold cross-validation: one training per fold, summarised as mean ± std across folds."""

from __future__ import annotations

import math

from distmtl.config.schema import Config
from distmtl.evaluation import statistics


def fold_configs(config: Config, folds: int) -> list[Config]:
    """The config of each fold: fold i is the test set, fold i+1 validation, the rest training."""
    return [config.model_copy(update={"data": config.data.model_copy(update={"cv_folds": folds, "cv_fold": i})})
            for i in range(folds)]


def summarize(fold_metrics: list[dict[str, float]]) -> dict[str, float]:
    """``cv/<key>`` (mean) and ``cv/<key>/std`` (sample standard deviation, ddof=1) of every test and
    best-validation metric across the folds' final reports."""
    keys = [k for k in fold_metrics[0] if k.startswith(("test/", "best/"))]
    summary: dict[str, float] = {}
    for key in keys:
        aggregate = statistics.summarize([m.get(key, math.nan) for m in fold_metrics])
        summary[f"cv/{key}"], summary[f"cv/{key}/std"] = aggregate.mean, aggregate.std
    return summary


def format_summary(summary: dict[str, float], folds: int) -> str:
    """A table of mean ± std per test metric, one line per task metric."""
    lines = [f"cross-validation over {folds} folds (test metrics at each fold's best validation epoch):"]
    for key in sorted(k for k in summary if k.startswith("cv/test/") and not k.endswith("/std")):
        lines.append(f"  {key[len('cv/'):]:<28} {summary[key]:.4f} ± {summary[key + '/std']:.4f}")
    return "\n".join(lines)
