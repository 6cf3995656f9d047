"""Single-task baselines and Δm, the multi-task literature's score of a multi-task model.

Δm is the mean, over the K tasks, of each task's relative change against the same task trained alone:

    Δm = 100 / K · Σₖ (−1)^{lₖ} (M_m,k − M_b,k) / M_b,k      (lₖ = 1 where lower is better)

in percent, on each task's headline metric (:attr:`Task.headline`). Positive Δm: the multi-task model
is better than single-task networks on average; no loss weight scales it, so a sweep may rank by it.

A baseline file (JSON, written by ``distmtl baseline --single-task``) holds, per task, the headline
metric, its direction, and its mean validation and test value over the baseline's seeds.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distmtl.errors import ConfigError
from distmtl.tasks.base import Task

FORMAT = "distmtl-single-task-baseline"
VERSION = 1
SPLITS = ("val", "test")


@dataclass(frozen=True)
class TaskBaseline:
    """One task trained alone: its headline metric, direction, and mean (± sample std) per split over ``n`` seeds."""

    metric: str
    mode: str
    val: float
    test: float
    val_std: float = math.nan
    test_std: float = math.nan
    n: int = 1


@dataclass(frozen=True)
class Baseline:
    """Single-task results per task, and where they came from."""

    tasks: dict[str, TaskBaseline]
    source: dict[str, Any]

    def delta_m(self, metrics: dict[str, float], split: str) -> float:
        """Δm (percent) of ``metrics`` (``{split}/{task}/{metric}`` keys) against this baseline; NaN where
        a task's metric is missing or NaN."""
        terms = []
        for task, base in self.tasks.items():
            value, reference = metrics.get(f"{split}/{task}/{base.metric}", math.nan), getattr(base, split)
            sign = 1.0 if base.mode == "max" else -1.0
            terms.append(sign * (value - reference) / reference)
        return 100.0 * sum(terms) / len(terms)

    def save(self, path: str | Path) -> None:
        """Write the file atomically (a temporary file renamed over ``path``): never half-written."""
        path = Path(path)
        data = {"format": FORMAT, "version": VERSION, "source": self.source,
                "tasks": {t: asdict(b) for t, b in self.tasks.items()}}
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as out:
            json.dump(_strict(data), out, indent=2)
        os.replace(out.name, path)

    @classmethod
    def load(cls, path: str | Path, where: str = "train.baseline") -> Baseline:
        """Read a baseline file; a missing, unreadable or foreign file is a :class:`ConfigError` naming it."""
        fix = "write one with `distmtl baseline --single-task --config FILE --out FILE`"
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{where}: no baseline file at {path}; {fix}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{where}: {path} is not a baseline file ({exc}); {fix}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ConfigError(f"{where}: {path} is not a distmtl single-task baseline (version {VERSION}); {fix}")
        try:
            tasks = {t: TaskBaseline(**{k: math.nan if v is None else v for k, v in b.items()})
                     for t, b in data["tasks"].items()}
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{where}: {path} has a malformed task entry ({exc}); {fix}") from None
        return cls(tasks, data.get("source", {}))

    def for_tasks(self, tasks: dict[str, Task], path: str, where: str = "train.baseline") -> Baseline:
        """This baseline restricted to ``tasks`` (Δm averages over the run's tasks); refused when it lacks one
        of them, measured another metric, or holds a zero or NaN value (Δm divides by it)."""
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise ConfigError(f"{where}: {path} has no single-task result for {missing} (it has {sorted(self.tasks)}); "
                              "write a baseline for this task set with `distmtl baseline --single-task`")
        for name, task in tasks.items():
            base = self.tasks[name]
            if base.metric != task.headline:
                raise ConfigError(f"{where}: {path} measured {name} by '{base.metric}', this version by "
                                  f"'{task.headline}'; write the baseline again")
            bad = [s for s in SPLITS if not math.isfinite(getattr(base, s)) or getattr(base, s) == 0]
            if bad:
                raise ConfigError(f"{where}: {path}: {name}'s {bad[0]} {base.metric} is {getattr(base, bad[0])}, so "
                                  "no relative change can be taken against it; "
                                  "train that baseline longer or on more data")
        return Baseline({t: self.tasks[t] for t in tasks}, self.source)


def _strict(value: Any) -> Any:
    """``value`` with NaN as ``null`` (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value
