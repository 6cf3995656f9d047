"""Single-task baselines for Δm: each task of a config trained alone, on several seeds, into a baseline file.

Every task gets a single-task network (``hard_sharing`` with that one task: the config's encoder,
bottleneck and training settings, no other head), is selected on its own headline metric, and is
tracked as a child MLflow run of one parent run that also holds the baseline file.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

from distmtl.config import apply_overrides, config_from_dict, load_yaml, plain_model
from distmtl.config.schema import Config
from distmtl.data.sources import check_targets
from distmtl.engine.assembly import build_parts, check_config
from distmtl.engine.checkpoint import TrainingState
from distmtl.machine import describe
from distmtl.recipes.base import Variant
from distmtl.recipes.execution import CellResult, run_cell
from distmtl.tasks import build_tasks
from distmtl.tasks.baseline import Baseline, TaskBaseline
from distmtl.tracking import MlflowRun

#: Config maps keyed by task name besides the weights (which a single task does not need): kept for the task alone.
TASK_KEYED = ("data.target_fraction", "data.augment.policy")


def single_task_overrides(base: dict[str, Any], task: str, headline: str) -> dict[str, Any]:
    """The overrides that reduce ``base`` (a config as a dict) to ``task`` alone on a single-task network (hard
    sharing with one head, plain loss), selected on its headline metric; apply them to :func:`plain_model` of
    ``base``: the settings of the base's architecture and weighting method do not carry over."""
    own = {key: {t: v for t, v in found.items() if t == task}
           for key in TASK_KEYED if (found := _lookup(base, key)) is not None}
    return {"tasks": [task], "model.architecture": "hard_sharing", "weighting": {"method": "fixed"},
            "train.baseline": None, "train.selection_metric": f"val/{task}/{headline}", "train.selection_mode": None,
            **own}


def single_task_config(base: dict[str, Any], task: str, headline: str, seed: int, source: str) -> Config:
    """``base`` (a config as a dict) reduced to ``task`` alone, selected on its headline metric, on ``seed``."""
    overrides = {**single_task_overrides(base, task, headline), "data.seed": seed, "train.seed": seed}
    return config_from_dict(apply_overrides(plain_model(base), overrides), source=source)


def run_single_task_baseline(config_path: str, overrides: dict[str, Any], seeds: int, out: Path, tracking_uri: str,
                             experiment: str, command: str) -> Baseline:
    """Train every task of the config alone on ``seeds`` seeds and write the baseline to ``out``."""
    base = apply_overrides(load_yaml(config_path), overrides)
    tasks = build_parts(config_from_dict(base, source=config_path), in_channels=3).tasks
    configs = {t: [single_task_config(base, t, task.headline, s, config_path) for s in range(seeds)]
               for t, task in tasks.items()}
    for task_configs in configs.values():
        check_config(task_configs[0])
    with MlflowRun(tracking_uri, experiment, f"single-task-baseline-{Path(config_path).stem}",
                   {"config": config_path, "seeds": seeds, "overrides": overrides}, command="baseline",
                   tags={"distmtl.baseline_command": command}) as parent:
        results: dict[str, TaskBaseline] = {}
        with tempfile.TemporaryDirectory(prefix="distmtl-baseline-") as scratch:
            for name, task in tasks.items():
                finals = []
                for seed, config in enumerate(configs[name]):
                    with MlflowRun(tracking_uri, experiment, f"single-task-{name}-seed{seed}", config.model_dump(),
                                   command="baseline", parent_run_id=parent.run_id, writer=parent.writer,
                                   tags={"distmtl.task": name, "distmtl.seed": str(seed)}) as run:
                        cell = run_cell(Variant(name, "single-task", config_path), config, run,
                                        Path(scratch) / f"{name}-{seed}")
                    finals.append(cell.metrics)
                    print(f"single-task {name} | seed {seed} | val {task.headline} "
                          f"{cell.metrics[f'val/{name}/{task.headline}']:.4f} | test {task.headline} "
                          f"{cell.metrics[f'test/{name}/{task.headline}']:.4f} | {cell.seconds:.1f} s", flush=True)
                results[name] = _summarise(finals, name, task.headline, task.metric_modes[task.headline])
        baseline = Baseline(results, {"config": str(Path(config_path).resolve()), "overrides": overrides,
                                      "seeds": seeds, "command": command, "machine": describe(),
                                      "mlflow_run": parent.real_run_id})
        baseline.save(out)
        parent.log_text(out.read_text(), out.name)
    return baseline


def baseline_from_cells(cells: list[CellResult], path: Path) -> Path:
    """Write a baseline file at ``path`` from recipe cells that each trained one task alone (one run per task, so
    no spread); Δm against it pairs a multi-task run with the single-task runs of its own seed."""
    results = {}
    for cell in cells:
        config = Config.model_validate(TrainingState.load(cell.checkpoint).config)
        (task,) = config.tasks
        headline = config.train.selection_metric.rsplit("/", 1)[-1]
        spec = build_tasks(config.tasks, check_targets(config.data, config.tasks))[task]
        results[task] = _summarise([cell.metrics], task, headline, spec.metric_modes[headline])
    Baseline(results, {"cells": [str(cell.checkpoint) for cell in cells]}).save(path)
    return path


def _summarise(finals: list[dict[str, float]], task: str, metric: str, mode: str) -> TaskBaseline:
    """Mean and sample std over seeds of the task's validation (at the best epoch) and test headline metric."""
    val = [f[f"best/val/{task}/{metric}"] for f in finals]
    test = [f[f"test/{task}/{metric}"] for f in finals]
    spread = (lambda v: statistics.stdev(v)) if len(finals) > 1 else (lambda v: math.nan)
    return TaskBaseline(metric, mode, statistics.fmean(val), statistics.fmean(test), spread(val), spread(test),
                        len(finals))


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    """The value at ``dotted`` in a nested dict, or None."""
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data
