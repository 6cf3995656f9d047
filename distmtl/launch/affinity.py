"""``distmtl affinity``: one short run that measures task affinity, then the grouping of the tasks for each budget
that maximises the predicted affinity.

The run is the config's tasks, data, encoder and optimizer with ``train.affinity_every`` set, on one of two models
(``--on``): ``hard_sharing``, one hard-shared network (the settings of another architecture are dropped; TAG's
setting), or ``branches``, Selective Sharing with every task on its own branch and no merge (the config's own branch
shape when it is a ``selective_sharing`` config, else fully connected branches on a shared encoder), where each task's
step is applied to every branch: whether one task's update helps another's network. It is trained by
:func:`~distmtl.launch.run.train_on_ray` as ``distmtl train`` trains (DDP on N Ray Train workers, one MLflow run
with the ``task_affinity`` matrices and heat maps of every epoch). A grouping is realised as Selective Sharing with
fixed branches (``model.selective.groups``, the config's own branch shape when it is a ``selective_sharing``
config), as ``distmtl recipe task_groupings`` trains them. A budget is a number of branches (``--budget 2``: the
best grouping into exactly two) or a parameter budget, a fraction of independent networks' parameters counted on
built models (``--budget 0.5x``: the best grouping whose model holds at most half). Every budget and the configs
are checked before Ray starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from distmtl.config import apply_overrides, config_from_dict, plain_model
from distmtl.config.schema import Config
from distmtl.data.sources import build_samples, check_source_files
from distmtl.engine.affinity import SIGNALS, matrix_from_metrics
from distmtl.engine.assembly import build_parts, check_config
from distmtl.errors import ConfigError
from distmtl.sharing.choose import best_groupings

_FRACTION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)x$")


@dataclass(frozen=True)
class Budget:
    """``branches`` (a number of branches) or ``fraction`` (of independent networks' parameters); ``text`` as given."""

    text: str
    branches: int | None = None
    fraction: float | None = None


def parse_budget(text: str, tasks: int) -> Budget:
    """``N`` (1 ≤ N ≤ K branches) or ``Fx`` (0 < F: a fraction of independent networks' parameters)."""
    fix = f"give a number of branches 1 … {tasks} (e.g. --budget 2) or a fraction of independent networks' " \
          "parameters (e.g. --budget 0.5x)"
    if text.isdigit():
        if not 1 <= int(text) <= tasks:
            raise ConfigError(f"--budget {text}: {tasks} tasks make 1 … {tasks} branches; {fix}")
        return Budget(text, branches=int(text))
    found = _FRACTION.match(text)
    if not found or float(found.group(1)) <= 0:
        raise ConfigError(f"--budget {text!r} is neither; {fix}")
    return Budget(text, fraction=float(found.group(1)))


def default_budgets(tasks: int) -> list[str]:
    """Every number of branches from 2 to K − 1, and half of independent networks' parameters."""
    return [str(n) for n in range(2, tasks)] + ["0.5x"]


#: The models an affinity run can measure on.
MODELS = ("hard_sharing", "branches")


def affinity_config(data: dict[str, Any], epochs: int | None, every: int, source: str,
                    on: str = "hard_sharing") -> Config:
    """The config of the affinity run: ``data`` (a config as a dict) on ``on``'s model (:data:`MODELS`), measuring
    every ``every`` steps, for ``epochs`` epochs (None: the config's)."""
    overrides: dict[str, Any] = {"train.affinity_every": every}
    if epochs is not None:
        overrides["optim.epochs"] = epochs
    if on == "branches":
        return config_from_dict(apply_overrides(grouping_config(data, [[t] for t in data.get("tasks", [])], source)
                                                .model_dump(), overrides), source=source)
    overrides["model.architecture"] = "hard_sharing"
    return config_from_dict(apply_overrides(plain_model(data), overrides), source=source)


def grouping_config(data: dict[str, Any], groups: list[list[str]], source: str) -> Config:
    """``data`` as Selective Sharing with fixed ``groups`` (its own branch shape when it is a Selective Sharing
    config)."""
    if data.get("model", {}).get("architecture") != "selective_sharing":
        data = plain_model(data)
    return config_from_dict(apply_overrides(data, {"model.architecture": "selective_sharing",
                                                   "model.selective.groups": groups}), source=source)


def branch_parameters(data: dict[str, Any], tasks: list[str], in_channels: int, source: str) -> dict[int, int]:
    """The parameters of a grouping's model for every number of branches (built from the config; the branches are
    identical, so the count depends only on how many there are), and of independent networks under key 0."""
    independent = apply_overrides(plain_model(data), {"model.architecture": "independent"})
    counts = {0: _parameters(config_from_dict(independent, source=source), in_channels)}
    for n in range(1, len(tasks) + 1):
        groups = [tasks[: len(tasks) - n + 1], *([t] for t in tasks[len(tasks) - n + 1:])]
        counts[n] = _parameters(grouping_config(data, groups, source), in_channels)
    return counts


def _parameters(config: Config, in_channels: int) -> int:
    return build_parts(config, in_channels).model.parameter_counts()["total"]


def branch_limit(budget: Budget, counts: dict[int, int]) -> int:
    """The most branches a budget allows (a parameter budget: the largest count whose model fits)."""
    if budget.branches is not None:
        return budget.branches
    limit = budget.fraction * counts[0]
    fitting = [n for n in counts if n > 0 and counts[n] <= limit]
    if not fitting:
        raise ConfigError(f"--budget {budget.text}: even one branch holds {counts[1]:,} parameters, over "
                          f"{budget.fraction:g} × independent networks' {counts[0]:,}; give a larger fraction")
    return max(fitting)


@dataclass(frozen=True)
class Plan:
    """What the command will do: the affinity run's config, the parsed budgets and the parameter counts."""

    config: Config
    budgets: list[Budget]
    counts: dict[int, int]
    limits: dict[str, int]


def default_epochs(config_epochs: int) -> int:
    """The affinity run's length when not given: a third of the config's epochs, at least 2 (the signal settles
    early; the run must stay far cheaper than training the groupings)."""
    return max(2, round(config_epochs / 3))


def plan(data: dict[str, Any], budgets: list[str], epochs: int | None, every: int, source: str,
         on: str = "hard_sharing") -> Plan:
    """Check everything before Ray starts: the run's config, every budget, and (for parameter budgets) the grouping
    models' sizes, for which the data's image channels are read."""
    if every < 1:
        raise ConfigError(f"--every {every}: measure every S ≥ 1 training steps")
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs {epochs}: the affinity run needs at least one epoch")
    config = affinity_config(data, epochs, every, source, on)
    if epochs is None:
        config = affinity_config(data, default_epochs(config.optim.epochs), every, source, on)
    check_config(config)
    if len(config.tasks) < 2:
        raise ConfigError(f"{source}: tasks {config.tasks}: affinity is between tasks; give at least two")
    parsed = [parse_budget(b, len(config.tasks)) for b in (budgets or default_budgets(len(config.tasks)))]
    counts = {}
    if any(b.fraction for b in parsed):
        check_source_files(config.data)
        channels = build_samples(config.data, config.tasks).image_shape[0]
        counts = branch_parameters(data, config.tasks, channels, source)
    limits = {b.text: branch_limit(b, counts) for b in parsed}
    return Plan(config, parsed, counts, limits)


def choose(plan: Plan, affinity: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per budget: the chosen grouping, its score and (parameter budgets) its model's parameters."""
    tasks = plan.config.tasks
    exact = sorted({plan.limits[b.text] for b in plan.budgets if b.branches is not None})
    upto = sorted({n for b in plan.budgets if b.fraction is not None for n in range(1, plan.limits[b.text] + 1)})
    best = best_groupings(affinity, tasks, sorted(set(exact) | set(upto)))
    chosen = {}
    for budget in plan.budgets:
        if budget.branches is not None:
            groups, value = best[budget.branches]
            chosen[budget.text] = {"groups": groups, "score": value}
        else:
            n = max(range(1, plan.limits[budget.text] + 1), key=lambda m: (best[m][1], -m))
            groups, value = best[n]
            chosen[budget.text] = {"groups": groups, "score": value, "parameters": plan.counts[n],
                                   "limit": budget.fraction * plan.counts[0]}
    return chosen


def summary(plan: Plan, metrics: dict[str, float], signal: str) -> tuple[str, dict[str, Any]]:
    """The printed report and the final JSON object (``affinity``: the chosen signal's matrix, the one the groupings
    maximise), from the run's last report."""
    tasks = plan.config.tasks
    matrices = {s: np.array(matrix_from_metrics(metrics, tasks, s)) for s in SIGNALS}
    chosen = choose(plan, matrices[signal])
    epochs = plan.config.optim.epochs
    overhead = metrics["affinity/run_overhead"]
    cost = epochs * (1 + overhead)
    model = "every task on its own branch" if plan.config.model.architecture == "selective_sharing" else "hard sharing"
    titles = {"lookahead": "lookahead affinity Z(row → column) = 1 − L_column(after row's step) / L_column",
              "lookahead_net": "lookahead net of the optimizer's drift (L_column(after the drift) − "
                               "L_column(after row's step)) / L_column",
              "cosine": "gradient cosine"}
    lines = [f"{model}, {epochs} epochs, measured every {plan.config.train.affinity_every} steps "
             "(means over the run; row: the task whose step, column: the task whose loss):"]
    for name in SIGNALS:
        lines += [f"{titles[name]}:", _matrix(tasks, matrices[name])]
    lines.append(f"groupings that maximise the predicted {signal}:")
    for budget in plan.budgets:
        found = chosen[budget.text]
        what = (f"{budget.branches} branch{'es' if budget.branches > 1 else ''}" if budget.branches is not None else
                f"≤ {budget.fraction:g} × independent networks' parameters ({found['limit']:,.0f})")
        size = f", {found['parameters']:,} parameters" if "parameters" in found else ""
        lines.append(f"  {what}: {' · '.join('{' + ', '.join(g) + '}' for g in found['groups'])}  "
                     f"(score {found['score']:.4f}{size})")
    lines.append(f"cost: {epochs} epochs, measuring took {100 * overhead:.0f} % more time than training: "
                 f"{cost:.2f} trial-epochs")
    result = {"tasks": tasks, "signal": signal, "affinity": matrices[signal].tolist(),
              "matrices": {name: matrix.tolist() for name, matrix in matrices.items()},
              "groupings": {b.text: chosen[b.text]["groups"] for b in plan.budgets},
              "scores": {b.text: chosen[b.text]["score"] for b in plan.budgets}, "cost_epochs": cost}
    return "\n".join(lines), result


def _matrix(tasks: list[str], matrix: np.ndarray) -> str:
    width = max(8, *map(len, tasks)) + 1
    rows = ["  " + " " * width + "".join(t[: width - 1].rjust(width) for t in tasks)]
    rows += ["  " + a.ljust(width) + "".join(f"{v:+.4f}".rjust(width) for v in row) for a, row in zip(tasks, matrix)]
    return "\n".join(rows)

