"""Cross-stitch segmentation + detection + classification with DWA, its ablations, the segmentation-only
baseline and the auxiliary-encoder variant (which fuses the frozen encoders of single-task runs of the same
seed); on the generator and, with ``--root``, on an Oxford-IIIT Pet directory."""

from __future__ import annotations

from distmtl.recipes.base import Column, Recipe, RecipeOptions, Variant, register

#: The generator's task names and their Oxford-IIIT Pet counterparts.
OXFORD_PET = {"mask": "trimap", "bbox": "head", "fine": "breed"}
AUX_BBOX, AUX_FINE = "bbox alone (auxiliary encoder)", "fine alone (auxiliary encoder)"
#: (row, config file, tasks, selection metric, variants whose checkpoints feed model.aux_checkpoints)
SPECS = (
    ("cross-stitch, DWA", "cross_stitch.yaml", ["mask", "bbox", "fine"], "val/mask/miou", ()),
    ("drop bbox", "cross_stitch_drop_bbox.yaml", ["mask", "fine"], "val/mask/miou", ()),
    ("drop fine", "cross_stitch_drop_fine.yaml", ["mask", "bbox"], "val/mask/miou", ()),
    ("segmentation only", "segmentation_only.yaml", ["mask"], "val/mask/miou", ()),
    (AUX_BBOX, "segmentation_only.yaml", ["bbox"], "val/bbox/iou", ()),
    (AUX_FINE, "segmentation_only.yaml", ["fine"], "val/fine/accuracy", ()),
    ("auxiliary-encoder transfer", "aux_transfer.yaml", ["mask"], "val/mask/miou", (AUX_BBOX, AUX_FINE)),
)


def variants(options: RecipeOptions) -> list[Variant]:
    """Every row on the generator, and on Oxford-IIIT Pet (tasks renamed) when the user gave its directory."""
    datasets: dict[str, tuple[dict, dict[str, str]]] = {"generator": ({}, {})}
    if options.root:
        datasets["oxford_pet"] = ({"data.source": "oxford_pet", "data.root": options.root}, OXFORD_PET)
    return [
        Variant(name, dataset, config,
                {**data, "tasks": [rename.get(t, t) for t in tasks],
                 "train.selection_metric": "/".join(rename.get(p, p) for p in selection.split("/"))},
                aux_from=aux, rename=rename)
        for dataset, (data, rename) in datasets.items() for name, config, tasks, selection, aux in SPECS
    ]


register(Recipe(
    name="cross_stitch",
    description="cross-stitch segmentation + detection + classification (DWA), ablations and baselines",
    variants=variants,
    columns=(Column("mask mIoU", "test/mask/miou"), Column("mask pixel acc.", "test/mask/pixel_accuracy"),
             Column("bbox IoU", "test/bbox/iou"), Column("fine acc.", "test/fine/accuracy"),
             Column("parameters", "params/total", digits=0)),
    reference="segmentation only",
    compare=("mask mIoU",),
    quick={"data.num_samples": 200, "data.image_size": 32, "data.batch_size": 32, "model.channels": [8, 16, 16],
           "model.bottleneck": 16, "optim.epochs": 2},
))
