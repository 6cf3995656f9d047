"""Selective Sharing under its four criteria, and each criterion's final grouping retrained from scratch, against
independent networks and hard sharing, with parameter counts, lock epoch, branch count and, on the generator, the
adjusted Rand index of the task grouping found against the generator's construction; on the generator and on
digits one-vs-all."""

from __future__ import annotations

from pathlib import Path

from sklearn.metrics import adjusted_rand_score

from distmtl.config.schema import Config
from distmtl.recipes.base import Column, Extra, Recipe, RecipeOptions, Variant, register
from distmtl.recipes.execution import final_structure

CRITERIA = ("similarity", "dissimilarity", "variance", "affinity")
#: The generator's construction: geometry tasks are related to one another; each appearance task stands alone.
GENERATOR_GROUPS = {"fine": 0, "coarse": 0, "shape": 0, "colour": 1, "texture": 2}
#: Each generator task's test metric (shape: MAE), as columns of the recipes that train all five.
GENERATOR_COLUMNS = (Column("fine acc.", "test/fine/accuracy"), Column("coarse acc.", "test/coarse/accuracy"),
                     Column("shape MAE", "test/shape/mae"), Column("colour acc.", "test/colour/accuracy"),
                     Column("texture acc.", "test/texture/accuracy"))


def lock_epoch(config: Config, checkpoint: Path, final: dict[str, float]) -> dict[str, float]:
    """The epoch at which the branches locked; nothing when they never locked (the cell then counts fewer runs)."""
    epoch = final.get("selective/lock_epoch", -1)
    return {"recipe/lock_epoch": epoch} if epoch >= 0 else {}


def grouping_ari(config: Config, checkpoint: Path, final: dict[str, float]) -> dict[str, float]:
    """Adjusted Rand index of the final branches (which task shares a branch with which) against the construction."""
    branch_of = final_structure(checkpoint)["branch_of"]
    tasks = sorted(GENERATOR_GROUPS)
    return {"recipe/ari": adjusted_rand_score([GENERATOR_GROUPS[t] for t in tasks], [branch_of[t] for t in tasks])}


def mean_balanced_accuracy(config: Config, checkpoint: Path, final: dict[str, float]) -> dict[str, float]:
    """The one-vs-all tasks' test balanced accuracy averaged over the tasks (one number per run)."""
    values = [final[f"test/{task}/balanced_accuracy"] for task in config.tasks]
    return {"recipe/mean_balanced_accuracy": sum(values) / len(values)}


def combined(*extras: Extra) -> Extra:
    def extra(config: Config, checkpoint: Path, final: dict[str, float]) -> dict[str, float]:
        return {k: v for e in extras for k, v in e(config, checkpoint, final).items()}
    return extra


def variants(options: RecipeOptions) -> list[Variant]:
    """Independent, hard sharing and the four criteria, each followed by its grouping retrained from scratch
    (the branches merged from the first step, every epoch spent on the final structure), on the generator and on
    digits one-vs-all."""
    found = []
    for dataset, config, selective_extra, base_extra in (
        ("generator", "selective_synthetic.yaml", combined(lock_epoch, grouping_ari), None),
        ("digits", "digits_one_vs_all.yaml", combined(lock_epoch, mean_balanced_accuracy), mean_balanced_accuracy),
    ):
        found += [Variant(a, dataset, config, {"model.architecture": a}, extra=base_extra, drop=("model.selective",))
                  for a in ("independent", "hard_sharing")]
        for criterion in CRITERIA:
            searched = {"model.architecture": "selective_sharing", "model.selective.criterion": criterion}
            found += [Variant(f"selective ({criterion})", dataset, config, searched, extra=selective_extra),
                      Variant(f"selective ({criterion}), retrained", dataset, config, searched, extra=selective_extra,
                              groups_from=f"selective ({criterion})")]  # never locks: lock_epoch adds nothing
    return found


register(Recipe(
    name="selective_sharing",
    description="Selective Sharing (4 criteria, each also retrained on the grouping it found) vs independent networks "
                "vs hard sharing",
    variants=variants,
    columns=(*GENERATOR_COLUMNS, Column("mean bal. acc. (one-vs-all)", "recipe/mean_balanced_accuracy"),
             Column("parameters", "params/total", digits=0), Column("lock epoch", "recipe/lock_epoch", digits=1),
             Column("branches", "selective/branches", digits=1), Column("ARI vs construction", "recipe/ari")),
    reference="independent",
    compare=("fine acc.", "mean bal. acc. (one-vs-all)"),
    quick={"data.num_samples": 300, "data.image_size": 16, "data.batch_size": 32, "model.channels": [8, 16],
           "model.bottleneck": 16, "optim.epochs": 3, "model.selective.start_epoch": 0,
           "model.selective.patience": 1, "model.selective.window": 1},
    default_seeds=5,
))
