"""Which tasks to train together: task affinity measured in a short run, validated against trained groupings.

Per data set and seed: independent networks (Δm's reference), the trained groupings, and two affinity runs of a third
of the epochs, measuring every :data:`EVERY` steps (:mod:`distmtl.engine.affinity`): ``hard sharing`` (every task
on one shared network, TAG's setting) and ``branches`` (Selective Sharing's model with every task on its own branch,
no merge: a task's step is applied to every branch, so the affinity says whether one task's update helps another's
network; on the generator's config the branches are whole encoders, i.e. independent networks). On the
generator the groupings are every one within half of independent networks' parameters (the exhaustive ground truth of
``task_groupings``); on digits one-vs-all, whose 10 tasks have 115,975 groupings (all within that budget: the
branches are small), a fixed sample (:func:`digits_sample`) plus the grouping each signal chooses for the seed.
The table holds each run's test metrics; the analysis below it (:mod:`distmtl.recipes.affinity_validation`) scores
each signal — Spearman ρ, regret, adjusted Rand index, cost."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tabulate import tabulate

from distmtl.config import load_yaml
from distmtl.data.sources import check_targets
from distmtl.engine.affinity import SIGNALS, matrix_from_metrics
from distmtl.launch.affinity import default_epochs
from distmtl.recipes.affinity_validation import SeedEvidence, delta_m, fixed_groupings, same_grouping, summary_table
from distmtl.recipes.base import CONFIGS, Column, Recipe, RecipeOptions, Variant, register
from distmtl.recipes.execution import final_structure
from distmtl.recipes.selective_sharing import GENERATOR_COLUMNS, GENERATOR_GROUPS, mean_balanced_accuracy
from distmtl.recipes.task_groupings import grouping_name
from distmtl.recipes.task_groupings import variants as generator_groupings
from distmtl.sharing.choose import best_groupings, label_partitions, to_grouping
from distmtl.tasks import build_tasks

#: Steps between two affinity measurements in the affinity runs.
EVERY = 5
#: The parameter budget every signal chooses within.
BUDGET = "0.5x"
#: Digits groupings trained per number of branches (one where there is only one).
DIGITS_PER_BRANCH_COUNT = 2
#: ``--quick``: one digits grouping for each of these numbers of branches.
QUICK_BRANCH_COUNTS = (1, 3, 6, 10)
DIGITS = "digits_one_vs_all.yaml"
#: The models the affinity is measured on.
MODES = ("hard sharing", "branches")
#: Every signal the analysis scores: each mode's matrices.
SIGNAL_NAMES = tuple(f"{mode}: {signal}" for mode in MODES for signal in SIGNALS)


def affinity_run(mode: str) -> str:
    return f"affinity run ({mode})"


def affinity_variant(dataset: str, config: str, mode: str, extra=None) -> Variant:
    """A third of the config's epochs (at least 2) of ``mode``'s model, measuring every :data:`EVERY` steps."""
    data = load_yaml(CONFIGS / config)
    overrides = {"train.affinity_every": EVERY, "optim.epochs": default_epochs(data["optim"]["epochs"])}
    if mode == "hard sharing":
        return Variant(affinity_run(mode), dataset, config, {**overrides, "model.architecture": "hard_sharing"},
                       drop=("model.selective",), extra=extra)
    return Variant(affinity_run(mode), dataset, config,
                   {**overrides, "model.selective.groups": [[t] for t in data["tasks"]]}, extra=extra)


def digits_sample(tasks: list[str], quick: bool = False) -> list[list[list[str]]]:
    """:data:`DIGITS_PER_BRANCH_COUNT` groupings per number of branches (``quick``: one for each of
    :data:`QUICK_BRANCH_COUNTS`), drawn uniformly among the partitions with that many groups by
    ``numpy.random.default_rng(0)`` (the same for every seed)."""
    labels = label_partitions(len(tasks))
    sizes = labels.max(axis=1) + 1
    rng = np.random.default_rng(0)
    found = []
    for n in (QUICK_BRANCH_COUNTS if quick else range(1, len(tasks) + 1)):
        index = np.flatnonzero(sizes == n)
        for i in rng.choice(index, size=min(1 if quick else DIGITS_PER_BRANCH_COUNT, len(index)), replace=False):
            found.append(to_grouping(tasks, labels[i]))
    return found


def chosen_groups(name: str, dataset: str):
    """The derived overrides of a variant that trains the grouping the signal ``name`` (``mode: signal``) chooses from
    its seed's affinity run (among all groupings: on digits every one is within the budget)."""
    mode, signal = name.split(": ")

    def derive(done: dict) -> dict[str, Any]:
        cell = done[(dataset, affinity_run(mode))]
        tasks = list(_tasks(DIGITS))
        matrix = np.array(matrix_from_metrics(cell.metrics, tasks, signal))
        best = best_groupings(matrix, tasks, list(range(1, len(tasks) + 1)))
        return {"model.selective.groups": max(best.values(), key=lambda found: found[1])[0]}
    return derive


def chosen_extra(config, checkpoint, final: dict[str, float]) -> dict[str, float]:
    """A chosen grouping's run: the one-vs-all mean balanced accuracy, and each task's branch as a number
    (``recipe/branch/<task>``), so the analysis knows which grouping the run trained."""
    branch_of = final_structure(checkpoint)["branch_of"]
    numbers = {b: i for i, b in enumerate(dict.fromkeys(branch_of.values()))}
    return {**mean_balanced_accuracy(config, checkpoint, final),
            **{f"recipe/branch/{t}": float(numbers[b]) for t, b in branch_of.items()}}


def variants(options: RecipeOptions) -> list[Variant]:
    """The generator's exhaustive groupings within the budget, then digits' sample and chosen groupings, each data
    set with independent networks first and an affinity run."""
    generator = generator_groupings(options)
    digits = [Variant("independent", "digits", DIGITS, {"model.architecture": "independent"}, drop=("model.selective",),
                      extra=mean_balanced_accuracy)]
    digits += [Variant(grouping_name(groups), "digits", DIGITS, {"model.selective.groups": groups},
                       extra=mean_balanced_accuracy) for groups in digits_sample(list(_tasks(DIGITS)), options.quick)]
    digits += [affinity_variant("digits", DIGITS, mode, extra=mean_balanced_accuracy) for mode in MODES]
    digits += [Variant(f"chosen ({name})", "digits", DIGITS, {}, extra=chosen_extra,
                       derive=chosen_groups(name, "digits")) for name in SIGNAL_NAMES]
    return [*generator, *(affinity_variant("generator", "selective_synthetic.yaml", mode) for mode in MODES), *digits]


def _tasks(config: str) -> dict[str, tuple[str, str]]:
    """Each task of ``config`` with its headline metric and direction."""
    data = load_yaml(CONFIGS / config)
    from distmtl.config import config_from_dict

    cfg = config_from_dict(data, source=config)
    specs = build_tasks(cfg.tasks, check_targets(cfg.data, cfg.tasks))
    return {t: (task.headline, task.metric_modes[task.headline]) for t, task in specs.items()}


def analyse(rows: list) -> dict[str, Any]:
    """Each data set's signal table (and per grouping the measured Δm and predicted scores) as Markdown and data."""
    parts, data = [], {}
    for dataset, config, construction in (("generator", "selective_synthetic.yaml", GENERATOR_GROUPS),
                                          ("digits", DIGITS, None)):
        mine = [r for r in rows if r.variant.dataset == dataset]
        if not mine:
            continue
        headlines = _tasks(config)
        tasks = list(headlines)
        limit, fits = _branch_limit(mine, len(tasks))
        seeds = _evidence(mine, tasks, headlines, limit)
        table, results, best, sigma = summary_table(seeds, list(SIGNAL_NAMES), limit, construction)
        parts.append(_markdown(dataset, table, results, best, sigma, seeds, limit if fits else None,
                               construction is not None))
        data[dataset] = {"best": best, "sigma": sigma, "branch_limit": limit, "budget_fits": fits,
                         "signals": {r["signal"]: {k: (v.__dict__ if hasattr(v, "mean") else v) for k, v in r.items()}
                                     for r in table},
                         "chosen": {s: [r.chosen for r in found] for s, found in results.items()}}
    return {"markdown": "\n\n".join(parts), "data": data}


def _evidence(rows: list, tasks: list[str], headlines: dict[str, tuple[str, str]], limit: int) -> list[SeedEvidence]:
    """Each seed's trained groupings and their Δm, the affinity runs' matrices, and the costs: each affinity run's
    trial-epochs against training every partition within the budget (``limit`` branches) for as many epochs as a
    trained grouping ran."""
    within = int(((label_partitions(len(tasks)).max(axis=1) + 1) <= limit).sum())
    by_name = {r.variant.name: r for r in rows}
    independent = by_name["independent"]
    runs = {mode: by_name[affinity_run(mode)] for mode in MODES}
    trained = [r for r in rows if r.variant.name != "independent" and r.variant.name not in map(affinity_run, MODES)]
    seeds = []
    for seed, reference in enumerate(independent.runs):
        groupings, measured = {}, {}
        for row in trained:
            metrics = row.runs[seed]
            groups = _groups_of(row, metrics, tasks)
            if groups is None or any(same_grouping(groups, g) for g in groupings.values()):
                continue
            groupings[row.variant.name] = groups
            measured[row.variant.name] = delta_m(metrics, reference, headlines)
        matrices, costs = {}, {}
        for mode, row in runs.items():
            run = row.runs[seed]
            for signal in SIGNALS:
                matrices[f"{mode}: {signal}"] = np.array(matrix_from_metrics(run, tasks, signal))
                costs[f"{mode}: {signal}"] = (run["epoch"] + 1) * (1 + run["affinity/run_overhead"])
        exhaustive = within * (trained[0].runs[seed]["epoch"] + 1)
        seeds.append(SeedEvidence(tasks, groupings, measured, matrices, costs, exhaustive))
    return seeds


def _groups_of(row, metrics: dict[str, float], tasks: list[str]) -> list[list[str]] | None:
    """The grouping a run trained, from its variant (fixed groups) or its logged branch labels."""
    groups = row.variant.overrides.get("model.selective.groups")
    if groups is not None:
        return groups
    labels = [metrics.get(f"recipe/branch/{t}") for t in tasks]
    return None if any(v is None or math.isnan(v) for v in labels) else to_grouping(tasks, np.array(labels, dtype=int))


def _branch_limit(rows: list, tasks: int) -> tuple[int, bool]:
    """The most branches within :data:`BUDGET` of independent networks' parameters, from the parameters each trained
    model reported (the groupings' branches are identical, so the count depends on their number alone), and whether
    any trained grouping is within it (at tiny sizes none may be: every grouping is then compared)."""
    fraction = float(BUDGET.removesuffix("x"))
    reference = next(r for r in rows if r.variant.name == "independent").runs[0]["params/total"]
    fitting = [run["selective/branches"] for r in rows if "model.selective.groups" in r.variant.overrides
               for run in r.runs if run["params/total"] <= fraction * reference]
    return (int(max(fitting)), True) if fitting else (tasks, False)


def _markdown(dataset: str, table: list[dict], results: dict, best: str, sigma: float, seeds: list[SeedEvidence],
              limit: int | None, construction: bool) -> str:
    n = len(seeds)
    budget = (f"chosen within {BUDGET} of independent networks' parameters, i.e. at most {limit} branches" if limit else
              f"no trained grouping is within {BUDGET} of independent networks' parameters at this size: chosen "
              "among all")
    lines = [f"**{dataset}: which tasks to train together** ({len(seeds[0].groupings)} trained groupings per seed; "
             f"{budget}; best grouping by mean measured Δm: {best}, σ = {sigma:.2f} points)", ""]
    signal_rows = []
    for row in table:
        within = "" if row["within_sigma"] is None else f"{row['within_sigma']} of {row['n']}"
        signal_rows.append([row["signal"], row["spearman"].cell(3), row["regret"].cell(2), within,
                            row["ari_construction"].cell(3) if construction else "", row["ari_best"].cell(3),
                            row["cost"].cell(1), row["exhaustive"].cell(0)])
    lines.append(tabulate(signal_rows, ["signal", "Spearman ρ", "regret (Δm points)", "within σ of the best",
                                        "ARI vs construction", "ARI vs best", "cost (trial-epochs)",
                                        "exhaustive (trial-epochs)"], tablefmt="github", disable_numparse=True))
    lines += ["", f"n = {n} seeds. Per grouping, measured Δm against independent networks (%) and each signal's "
              "predicted score, mean ± std:", ""]
    from distmtl.evaluation.statistics import summarize
    from distmtl.sharing.choose import score

    names = fixed_groupings(seeds)
    grouping_rows = []
    for name in sorted(names, key=lambda m: -np.mean([s.delta_m[m] for s in seeds])):
        cells = [summarize([score(s.matrices[sig], s.tasks, s.groupings[name]) for s in seeds]).cell(4)
                 for sig in SIGNAL_NAMES]
        grouping_rows.append([name, summarize([s.delta_m[name] for s in seeds]).cell(2), *cells])
    lines.append(tabulate(grouping_rows, ["grouping", "Δm (%)", *(f"{s} score" for s in SIGNAL_NAMES)],
                          tablefmt="github", disable_numparse=True))
    for signal, found in results.items():
        lines.append("")
        lines.append(f"{signal} chose, per seed: " + "; ".join(grouping_name(r.chosen) for r in found))
    return "\n".join(lines)


RECIPE = register(Recipe(
    name="task_affinity",
    description="task affinity (lookahead, gradient cosine) from a short hard-sharing run vs trained groupings: "
                "Spearman ρ, regret, ARI, cost",
    variants=variants,
    columns=(*GENERATOR_COLUMNS, Column("mean bal. acc. (one-vs-all)", "recipe/mean_balanced_accuracy"),
             Column("parameters", "params/total", digits=0), Column("branches", "selective/branches", digits=1),
             Column("affinity overhead", "affinity/run_overhead", digits=2)),
    reference="independent",
    compare=(),
    quick={"data.num_samples": 300, "data.image_size": 16, "data.batch_size": 32, "model.channels": [8, 16],
           "model.bottleneck": 16, "optim.epochs": 2},
    default_seeds=5,
    analysis=analyse,
))
