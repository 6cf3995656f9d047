"""Every weighting method on the generator's five tasks with hard sharing, against single-task networks: each task's
test metric, Δm against the single-task runs of the same seed, and the time per training step relative to
``fixed`` (same seed, same process)."""

from __future__ import annotations

from distmtl.config import load_config, load_yaml
from distmtl.engine.assembly import build_parts
from distmtl.recipes.base import CONFIGS, Column, Recipe, RecipeOptions, Variant, register
from distmtl.recipes.selective_sharing import GENERATOR_COLUMNS
from distmtl.recipes.single_task import single_task_overrides
from distmtl.weighting import WEIGHTINGS

CONFIG = "weightings.yaml"


def single_task_name(task: str) -> str:
    return f"single-task {task}"


def variants(options: RecipeOptions) -> list[Variant]:
    """A single-task network per task (selected on its headline metric, Δm's), then every registered method (``fixed``
    first: the reference)."""
    base = load_yaml(CONFIGS / CONFIG)
    tasks = build_parts(load_config(CONFIGS / CONFIG), in_channels=3).tasks
    alone = [Variant(single_task_name(t), "generator", CONFIG, single_task_overrides(base, t, task.headline))
             for t, task in tasks.items()]
    methods = sorted(WEIGHTINGS, key=lambda m: (m != "fixed", WEIGHTINGS.get(m).kind, m))
    return [*alone, *(Variant(m, "generator", CONFIG, {"weighting.method": m},
                              baseline_of=tuple(v.name for v in alone)) for m in methods)]


register(Recipe(
    name="weightings",
    description="every weighting method (loss- and gradient-level) with hard sharing vs single-task networks (Δm)",
    variants=variants,
    columns=(*GENERATOR_COLUMNS, Column("Δm (%)", "test/delta_m", digits=1),
             Column("step time / fixed", "train/step_ms", digits=2, ratio_to="fixed")),
    reference="fixed",
    compare=("Δm (%)",),
    quick={"data.num_samples": 160, "data.image_size": 16, "data.batch_size": 32, "model.channels": [8, 16],
           "model.bottleneck": 16, "optim.epochs": 1},
))
