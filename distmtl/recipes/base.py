"""What a recipe is: named variants of example configs, trained on several seeds, summarised in one table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distmtl.config.schema import Config
from distmtl.engine import Reporter, train
from distmtl.registry import Registry

CONFIGS = Path(__file__).resolve().parents[2] / "search_spaces" / "configs"

#: Trains one run: the engine by default; a variant may wrap it (e.g. the transfer-learning baseline).
Runner = Callable[[Config, Reporter], dict[str, float]]
#: Metrics a run's numbers do not hold yet, from its config, its last checkpoint and its final report.
Extra = Callable[[Config, Path, dict[str, float]], dict[str, float]]


@dataclass(frozen=True)
class Column:
    """A table column: the header and the MLflow metric of each run that fills it (``{task}`` parts of the
    key are renamed per data set, see :attr:`Variant.rename`); with ``ratio_to``, each run's value divided by that
    of the named variant's run on the same data set and seed."""

    header: str
    key: str
    digits: int = 3
    ratio_to: str | None = None


@dataclass(frozen=True)
class Variant:
    """One row of a recipe's table: a config file under ``search_spaces/configs`` with overrides.

    ``aux_from`` names earlier variants (same data set and seed) whose last checkpoints become this
    variant's ``model.aux_checkpoints``; ``groups_from`` names an earlier Selective Sharing variant
    whose final task grouping this variant trains from scratch (``model.selective.groups``);
    ``rename`` maps task names of the column keys to this data set's (e.g. ``mask`` → ``trimap`` on
    Oxford-IIIT Pet); ``drop`` names keys of the config file the variant does not take (the settings of the
    file's architecture, when the variant trains another one); ``baseline_of`` names earlier single-task variants
    (same data set and seed) whose results become this variant's ``train.baseline``, so its runs report Δm;
    ``derive`` computes further overrides from the earlier cells of the same seed (keyed ``(dataset, variant)``).
    """

    name: str
    dataset: str
    config: str
    overrides: dict[str, Any] = field(default_factory=dict)
    runner: Runner = train
    extra: Extra | None = None
    aux_from: tuple[str, ...] = ()
    groups_from: str | None = None
    rename: dict[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    baseline_of: tuple[str, ...] = ()
    derive: Callable[[dict[tuple[str, str], Any]], dict[str, Any]] | None = None

    def key(self, column: Column) -> str:
        """The metric that fills ``column`` in this variant's runs."""
        return "/".join(self.rename.get(part, part) for part in column.key.split("/"))


@dataclass(frozen=True)
class RecipeOptions:
    """How the user asked for a recipe: size, seeds (how many, from ``first_seed``), config overrides and optional
    real-data directory."""

    quick: bool = False
    seeds: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    root: str | None = None
    first_seed: int = 0


@dataclass(frozen=True)
class Recipe:
    """An experiment of the source documents: its variants (a function of the options), its table's
    columns, the quick size, and the paired comparisons (each variant against ``reference`` on the ``compare``
    columns)."""

    name: str
    description: str
    variants: Callable[[RecipeOptions], list[Variant]]
    columns: tuple[Column, ...]
    reference: str
    compare: tuple[str, ...]
    quick: dict[str, Any]
    default_seeds: int = 3
    quick_seeds: int = 2
    analysis: Callable[[list[Any]], dict[str, Any]] | None = None

    def seeds(self, options: RecipeOptions) -> int:
        """How many seeds to run: the user's number, else the quick or full default."""
        return options.seeds or (self.quick_seeds if options.quick else self.default_seeds)


RECIPES: Registry[Recipe] = Registry("recipe", "recipe")


def register(recipe: Recipe) -> Recipe:
    """Make ``recipe`` available to ``distmtl recipe NAME``."""
    return RECIPES.register(recipe.name)(recipe)
