"""Recipes: one command per experiment of the source documents, each a table of mean ± std over seeds whose
runs are children of one MLflow parent run. Importing the package registers every recipe."""

from distmtl.recipes import (  # noqa: F401  (register)
    cross_stitch,
    fine_coarse,
    joint_mapping,
    merge_rules,
    selective_sharing,
    task_affinity,
    task_groupings,
    weightings,
)
from distmtl.recipes.base import RECIPES, Recipe, RecipeOptions
from distmtl.recipes.runner import RecipeResult, run_recipe

__all__ = ["RECIPES", "Recipe", "RecipeOptions", "RecipeResult", "run_recipe"]
