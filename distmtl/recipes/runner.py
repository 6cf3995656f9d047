"""Run a recipe: every variant on every seed as a child MLflow run of one parent run, which then holds the
table (``table.md``, ``table.json``) built from exactly the numbers the children logged."""

from __future__ import annotations

import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distmtl.config import apply_overrides, config_from_dict, load_yaml, without
from distmtl.config.schema import Config
from distmtl.engine.assembly import check_config
from distmtl.engine.context import resolve_device
from distmtl.machine import describe
from distmtl.recipes.base import CONFIGS, Recipe, RecipeOptions, Variant
from distmtl.recipes.execution import CellResult, final_structure, run_cell
from distmtl.recipes.single_task import baseline_from_cells
from distmtl.recipes.table import Row, build_table, to_markdown
from distmtl.sharing.plan import tasks_by_branch
from distmtl.tracking import MlflowRun

log = logging.getLogger("distmtl")


@dataclass(frozen=True)
class RecipeResult:
    """A finished recipe: the table (as data and Markdown), the parent MLflow run and the wall time."""

    table: dict[str, Any]
    markdown: str
    parent_run_id: str
    seconds: float


def cell_config(recipe: Recipe, variant: Variant, options: RecipeOptions, seed: int,
                derived: dict[str, Any] | None = None) -> Config:
    """The config of ``variant`` on ``seed``: its file and overrides, the quick size, the user's ``--set``,
    then the seed (data and training), so that every seed draws other data and other initial weights, and
    what it takes from earlier cells (``derived``); the keys the variant drops go last, so that a quick size or a
    ``--set`` of another architecture's keys (``model.selective.*``) reaches only the variants that take them."""
    overrides = {**variant.overrides, **(recipe.quick if options.quick else {}), **options.overrides,
                 "data.seed": seed, "train.seed": seed, **(derived or {})}
    path = CONFIGS / variant.config
    return config_from_dict(without(apply_overrides(load_yaml(path), overrides), variant.drop), source=str(path))


def derived_overrides(variant: Variant, done: dict[tuple[str, str], CellResult]) -> dict[str, Any]:
    """What ``variant`` takes from earlier cells of its seed: their checkpoints (``aux_from``), the task grouping
    one of them ended with (``groups_from``) or their single-task results as its Δm baseline (``baseline_of``)."""
    derived: dict[str, Any] = {}
    if variant.aux_from:
        derived["model.aux_checkpoints"] = [str(done[(variant.dataset, name)].checkpoint) for name in variant.aux_from]
    if variant.baseline_of:
        cells = [done[(variant.dataset, name)] for name in variant.baseline_of]
        derived["train.baseline"] = str(baseline_from_cells(cells, cells[0].checkpoint.parent / "baseline.json"))
    if variant.groups_from:
        branch_of = final_structure(done[(variant.dataset, variant.groups_from)].checkpoint)["branch_of"]
        derived["model.selective.groups"] = list(tasks_by_branch(branch_of).values())  # singletons too: all fixed
    if variant.derive:
        derived.update(variant.derive(done))
    return derived


def run_recipe(recipe: Recipe, options: RecipeOptions, tracking_uri: str, experiment: str,
               command: str) -> RecipeResult:
    """Run every variant of ``recipe`` on each seed, in this process, and log the table to the parent run.

    Checkpoints go to a temporary directory (each child run keeps its plots and records in MLflow). Configs are checked
    before the first run starts, so a bad ``--set`` costs no training.
    """
    started = time.perf_counter()
    seeds, variants = recipe.seeds(options), recipe.variants(options)
    for variant in variants:
        if not variant.aux_from:  # a variant built on earlier checkpoints is checked when they exist
            check_config(cell_config(recipe, variant, options, 0))
    params = {"recipe": recipe.name, "seeds": seeds, "first_seed": options.first_seed, "quick": options.quick,
              "root": options.root, "overrides": options.overrides}
    tags = {"distmtl.recipe": recipe.name}
    with MlflowRun(tracking_uri, experiment, f"recipe-{recipe.name}", params, command="recipe",
                   tags={**tags, "distmtl.recipe_command": command}) as parent:
        with tempfile.TemporaryDirectory(prefix="distmtl-recipe-") as scratch:
            rows = _run_cells(recipe, variants, options, seeds, (parent, experiment), Path(scratch), tags)
        table = build_table(recipe, rows)
        markdown = _document(recipe, table, command, time.perf_counter() - started, options, parent.real_run_id)
        parent.log_dict(_jsonable(table), "table.json")
        parent.log_text(markdown, "table.md")
    return RecipeResult(table, markdown, parent.real_run_id, time.perf_counter() - started)


def _run_cells(recipe: Recipe, variants: list[Variant], options: RecipeOptions, seeds: int,
               parent: tuple[MlflowRun, str], workdir: Path, tags: dict[str, str]) -> list[Row]:
    """Seed by seed, every variant (later variants may use earlier ones' checkpoints of the same seed), each a
    child run of ``parent`` (the run and its experiment)."""
    parent_run, experiment = parent
    runs: dict[tuple[str, str], list[dict[str, float]]] = {(v.dataset, v.name): [] for v in variants}
    for seed in range(options.first_seed, options.first_seed + seeds):
        done: dict[tuple[str, str], CellResult] = {}
        for variant in variants:
            config = cell_config(recipe, variant, options, seed, derived_overrides(variant, done))
            name = f"{recipe.name}-{variant.dataset}-{_slug(variant.name)}-seed{seed}"
            with MlflowRun(parent_run.writer.tracking_uri, experiment, name, config.model_dump(), command="recipe",
                           parent_run_id=parent_run.run_id, writer=parent_run.writer,
                           tags={**tags, "distmtl.dataset": variant.dataset, "distmtl.variant": variant.name,
                                 "distmtl.seed": str(seed)}) as run:
                result = run_cell(variant, config, run, workdir / name)
            done[(variant.dataset, variant.name)] = result
            runs[(variant.dataset, variant.name)].append(result.metrics)
            shown = "  ".join(f"{variant.key(c) if c.ratio_to else c.header} "
                              f"{result.metrics[variant.key(c)]:.{c.digits}f}"
                              for c in recipe.columns if variant.key(c) in result.metrics)  # a ratio: its own value
            print(f"{recipe.name} | {variant.dataset} | {variant.name} | seed {seed} | {shown} | "
                  f"{result.seconds:.1f} s", flush=True)
    return [Row(v, runs[(v.dataset, v.name)]) for v in variants]


def _document(recipe: Recipe, table: dict[str, Any], command: str, seconds: float, options: RecipeOptions,
              parent_run_id: str) -> str:
    """The table with what produced it: command, machine, wall time and the MLflow parent run."""
    device = resolve_device(options.overrides.get("train.device", "auto"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return (f"### {recipe.name}: {recipe.description}\n\n"
            f"Mean ± sample std over {recipe.seeds(options)} seeds (data and training seed {options.first_seed}…"
            f"{options.first_seed + recipe.seeds(options) - 1}); test metrics at each run's best validation epoch.\n\n"
            f"{to_markdown(table)}\n\n"
            f"Command: `{command}`  \nMachine: {describe()}; torch device {name}  \n"
            f"Wall time: {seconds:.0f} s  \nMLflow parent run: {parent_run_id}\n")


def _jsonable(value: Any) -> Any:
    """``value`` with NaN as ``null`` (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=]+", "_", name).strip("_")
