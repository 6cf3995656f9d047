"""Joint classification + shape-space mapping against the transfer-learning baseline, over the mapping weight λ,
and with reconstruction as a third task; Kendall τ between representation and shape-space distances."""

from __future__ import annotations

from pathlib import Path

from distmtl.config.schema import Config
from distmtl.data.sources import build_samples
from distmtl.engine import Reporter
from distmtl.engine.export import best_model
from distmtl.engine.loaders import make_splits
from distmtl.evaluation.representation import mapping_kendall_tau
from distmtl.evaluation.transfer import transfer_baseline
from distmtl.recipes.base import Column, Recipe, RecipeOptions, Variant, register

LAMBDAS = (0.0625, 0.25, 1.0, 2.0)
QUICK_LAMBDAS = (0.25, 1.0)
TRANSFER = "transfer baseline"


def transfer(config: Config, reporter: Reporter) -> dict[str, float]:
    """The baseline: ``fine`` classifier trained alone (its epochs to ``reporter``), ridge map to ``shape``."""
    return transfer_baseline(config, "fine", "shape", reporter)


def transfer_as_joint(config: Config, checkpoint: Path, final: dict[str, float]) -> dict[str, float]:
    """The ridge map's test metrics under the joint model's names (``test/shape/…``), so one column holds both."""
    prefix = "transfer/test/"
    return {key[len("transfer/"):]: value for key, value in final.items() if key.startswith(prefix)}


def joint_tau(config: Config, checkpoint: Path, final: dict[str, float]) -> dict[str, float]:
    """Kendall τ of the joint model's best-epoch representation on the test images that carry coordinates."""
    samples = build_samples(config.data, config.tasks)
    _, _, test = make_splits(config, samples)
    return {"test/shape/kendall_tau": mapping_kendall_tau(best_model(checkpoint)[0], samples, test, "shape")}


def variants(options: RecipeOptions) -> list[Variant]:
    """The baseline, the joint model at each λ, and the joint model with reconstruction at λ = 1."""
    lambdas = QUICK_LAMBDAS if options.quick else LAMBDAS
    return [
        Variant(TRANSFER, "generator", "joint_mapping.yaml", runner=transfer, extra=transfer_as_joint),
        *[Variant(f"joint λ={lam:g}", "generator", "joint_mapping.yaml", {"weighting.weights.shape": lam},
                  extra=joint_tau) for lam in lambdas],
        Variant("joint + reconstruction λ=1", "generator", "joint_mapping_reconstruction.yaml",
                {"weighting.weights.shape": 1.0}, extra=joint_tau),
    ]


register(Recipe(
    name="joint_mapping",
    description="classification + shape-space mapping vs the transfer-learning baseline, over λ, ± reconstruction",
    variants=variants,
    columns=(Column("fine accuracy", "test/fine/accuracy"), Column("shape R²", "test/shape/r2"),
             Column("shape MAE", "test/shape/mae"), Column("Kendall τ", "test/shape/kendall_tau")),
    reference=TRANSFER,
    compare=("shape R²",),
    quick={"data.num_samples": 300, "data.image_size": 16, "data.batch_size": 32, "model.channels": [8, 16],
           "model.bottleneck": 16, "optim.epochs": 2},
))
