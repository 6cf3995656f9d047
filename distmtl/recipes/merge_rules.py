"""Selective Sharing's merge rules side by side: which weights a merged branch keeps, and what each merge did to the
tasks it merged (the share of each merged task's progress that the merge undid: its training loss over the steps just
after the merge minus just before, over its first epoch's loss, :mod:`distmtl.engine.merge_effects`), on the
generator and on digits one-vs-all, configs as shipped but for the rule."""

from __future__ import annotations

import statistics
from pathlib import Path

from distmtl.config.schema import Config
from distmtl.engine.checkpoint import TrainingState
from distmtl.engine.merge_effects import progress_lost
from distmtl.recipes.base import Column, Recipe, RecipeOptions, Variant, register
from distmtl.recipes.selective_sharing import (
    GENERATOR_COLUMNS,
    combined,
    grouping_ari,
    lock_epoch,
    mean_balanced_accuracy,
)

RULES = ("lowest_loss", "highest_loss", "mean")


def merge_effects(config: Config, checkpoint: Path, final: dict[str, float]) -> dict[str, float]:
    """How many merges the run made and, over every merged task of every merge, the mean and the largest share of its
    progress the merge undid (:func:`~distmtl.engine.merge_effects.progress_lost`; empty for a run without a
    merge)."""
    records = TrainingState.load(checkpoint).controller.get("merge_effects", [])
    lost = [progress_lost(r, t) for r in records for t in r["tasks"] if r["first"][t] > 0]
    found = {"recipe/merges": float(len(records))}
    if lost:
        found.update({"recipe/merge_progress_lost": statistics.fmean(lost), "recipe/merge_worst_lost": max(lost)})
    return found


def variants(options: RecipeOptions) -> list[Variant]:
    """Selective Sharing under each rule, on both data sets."""
    found = []
    for dataset, config, extra in (
        ("generator", "selective_synthetic.yaml", combined(lock_epoch, grouping_ari, merge_effects)),
        ("digits", "digits_one_vs_all.yaml", combined(lock_epoch, mean_balanced_accuracy, merge_effects)),
    ):
        found += [Variant(f"merge: {rule}", dataset, config, {"model.selective.merge": rule}, extra=extra)
                  for rule in RULES]
    return found


register(Recipe(
    name="merge_rules",
    description="Selective Sharing's merge rules (which weights a merged branch keeps) and each merge's effect on the "
                "merged tasks' training loss",
    variants=variants,
    columns=(*GENERATOR_COLUMNS, Column("mean bal. acc. (one-vs-all)", "recipe/mean_balanced_accuracy"),
             Column("parameters", "params/total", digits=0), Column("lock epoch", "recipe/lock_epoch", digits=1),
             Column("merges", "recipe/merges", digits=1),
             Column("progress lost at a merge", "recipe/merge_progress_lost", digits=2),
             Column("worst progress lost", "recipe/merge_worst_lost", digits=2),
             Column("ARI vs construction", "recipe/ari")),
    reference="merge: lowest_loss",
    compare=("fine acc.", "coarse acc.", "mean bal. acc. (one-vs-all)"),
    quick={"data.num_samples": 300, "data.image_size": 16, "data.batch_size": 32, "model.channels": [8, 16],
           "model.bottleneck": 16, "optim.epochs": 3, "model.selective.start_epoch": 0,
           "model.selective.patience": 1, "model.selective.window": 1},
    default_seeds=5,
))
