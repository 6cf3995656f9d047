"""The six fine/coarse hard-sharing architectures at equal hyperparameters (the CIFAR-100 study), on the
generator and, with ``--root``, on a CIFAR-100 directory."""

from __future__ import annotations

from distmtl.recipes.base import Column, Recipe, RecipeOptions, Variant, register

ARCHITECTURES = ("independent", "hard_sharing", "reuse_coarse", "reuse_fine", "shared_reuse_coarse",
                 "shared_reuse_fine")


def variants(options: RecipeOptions) -> list[Variant]:
    """Every architecture on the generator, and on CIFAR-100 when the user gave its directory."""
    datasets = {"generator": {}}
    if options.root:
        datasets["cifar100"] = {"data.source": "cifar100", "data.root": options.root}
    return [Variant(architecture, dataset, "fine_coarse.yaml", {**data, "model.architecture": architecture})
            for dataset, data in datasets.items() for architecture in ARCHITECTURES]


register(Recipe(
    name="fine_coarse",
    description="six fine/coarse architectures (independent, hard sharing, label reuse) at equal hyperparameters",
    variants=variants,
    columns=(Column("fine accuracy", "test/fine/accuracy"), Column("coarse accuracy", "test/coarse/accuracy"),
             Column("parameters", "params/total", digits=0)),
    reference="independent",
    compare=("fine accuracy",),
    quick={"data.num_samples": 300, "data.image_size": 16, "data.batch_size": 32, "model.channels": [8, 16],
           "model.bottleneck": 16, "optim.epochs": 2},
))
