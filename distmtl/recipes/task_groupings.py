"""Every grouping of the generator's tasks whose model has at most half the parameters of independent networks,
each trained from scratch with its branches fixed (``model.selective.groups``), against independent networks: the
best any task grouping reaches within Selective Sharing's parameter target, hence a bound on what the method can
find there.

The budget is checked on the models themselves (built from each cell's config, no data loaded), so it holds at any
size: with the generator's convolutional branches at full size, the groupings of its 5 tasks into at most 2
branches (16 of the 52 groupings) are within it."""

from __future__ import annotations

from sympy.utilities.iterables import multiset_partitions

from distmtl.config.schema import Config
from distmtl.engine.assembly import build_parts
from distmtl.recipes.base import Column, Recipe, RecipeOptions, Variant, register
from distmtl.recipes.runner import cell_config
from distmtl.recipes.selective_sharing import GENERATOR_COLUMNS

CONFIG = "selective_synthetic.yaml"
#: Selective Sharing's target: at most this fraction of independent networks' parameters.
BUDGET = 0.5
GENERATOR_CHANNELS = 3  # RGB


def groupings(tasks: list[str]) -> list[list[list[str]]]:
    """Every partition of ``tasks``, fewest groups first; each group and the groups themselves in task order."""
    order = {t: i for i, t in enumerate(tasks)}
    found = []
    for branches in range(1, len(tasks) + 1):
        for partition in multiset_partitions(tasks, branches):
            groups = [sorted(group, key=order.__getitem__) for group in partition]
            found.append(sorted(groups, key=lambda g: order[g[0]]))
    return found


def grouping_name(groups: list[list[str]]) -> str:
    """E.g. ``{fine, coarse, shape} · {colour, texture}``."""
    return " · ".join("{" + ", ".join(group) + "}" for group in groups)


def parameters(config: Config) -> int:
    """The parameter count of the model ``config`` builds (no data is loaded)."""
    return build_parts(config, GENERATOR_CHANNELS).model.parameter_counts()["total"]


def variants(options: RecipeOptions) -> list[Variant]:
    """Independent networks, then every grouping of the tasks within :data:`BUDGET` of their parameters."""
    independent = Variant("independent", "generator", CONFIG, {"model.architecture": "independent"},
                          drop=("model.selective",))
    config = cell_config(RECIPE, independent, options, seed=0)
    limit = BUDGET * parameters(config)
    fixed = [Variant(grouping_name(groups), "generator", CONFIG,
                     {"model.architecture": "selective_sharing", "model.selective.groups": groups})
             for groups in groupings(config.tasks)]
    return [independent, *(v for v in fixed if parameters(cell_config(RECIPE, v, options, seed=0)) <= limit)]


RECIPE = register(Recipe(
    name="task_groupings",
    description="every task grouping within half the parameters of independent networks, trained from scratch, "
                "vs independent networks",
    variants=variants,
    columns=(*GENERATOR_COLUMNS, Column("parameters", "params/total", digits=0),
             Column("branches", "selective/branches", digits=1)),
    reference="independent",
    compare=("fine acc.", "shape MAE"),
    quick={"data.num_samples": 300, "data.image_size": 16, "data.batch_size": 32, "model.channels": [8, 16],
           "model.bottleneck": 16, "optim.epochs": 2},
))
