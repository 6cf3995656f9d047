"""The gradient aggregators of the literature, from torchjd (MIT licence; ``torchjd[full]`` 0.18, pinned to
< 0.19 in pyproject.toml), each registered as a gradient-level method (:mod:`distmtl.weighting.aggregation` does
the per-task gradients and the cross-rank reduction; torchjd only turns the K task gradients into one update).

Most aggregators form the update as a weighted sum of the task gradients whose weights depend on the Gramian
G = J·Jᵀ alone (torchjd's ``Weighting`` on the Gramian): the step then works on a K × K matrix. Nash-MTL weighs
from J itself; GradDrop and ConFIG combine J element-wise and report least-squares weights.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from pydantic import Field
from torchjd.aggregation import (
    AlignedMTLWeighting,
    CAGradWeighting,
    ConFIG,
    DualProjWeighting,
    GradDrop,
    IMTLGWeighting,
    MGDAWeighting,
    NashMTL,
    PCGradWeighting,
    UPGradWeighting,
)

from distmtl.config.schema import WeightingConfig
from distmtl.weighting.aggregation import GradientSettings, GradientWeighting, effective_weights
from distmtl.weighting.base import WEIGHTINGS


class GramianMethod(GradientWeighting):
    """An update wᵀJ whose task weights w are a function of the Gramian J·Jᵀ (``rule``: a torchjd Weighting)."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str], rule: torch.nn.Module) -> None:
        super().__init__(cfg, tasks)
        self.rule = rule

    def aggregate(self, jacobian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.rule(jacobian @ jacobian.T)
        return weights @ jacobian, weights


@WEIGHTINGS.register("upgrad", settings=GradientSettings)
class UPGradMethod(GramianMethod):
    """UPGrad (Quinton & Rey, 2024, "Jacobian Descent for Multi-Objective Optimization"): each task gradient
    projected onto the dual cone of all of them, averaged; never conflicts with any task."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks, UPGradWeighting())


@WEIGHTINGS.register("mgda", settings=GradientSettings)
class MGDAMethod(GramianMethod):
    """MGDA (Désidéri, 2012; Sener & Koltun, 2018): the minimum-norm point of the convex hull of the task
    gradients (Frank-Wolfe on the Gramian)."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks, MGDAWeighting())


@WEIGHTINGS.register("pcgrad", settings=GradientSettings)
class PCGradMethod(GramianMethod):
    """PCGrad (Yu et al., 2020, "Gradient Surgery for Multi-Task Learning"): each task gradient loses its
    component along every other task gradient it conflicts with, in a random order, then they are summed."""

    random = True

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks, PCGradWeighting())


class CAGradSettings(GradientSettings):
    """The ``weighting`` keys of ``cagrad``."""

    c: float = Field(0.4, ge=0, description="CAGrad's c: how far the update may leave the average gradient, as a "
                                            "multiple of its norm (0: the average gradient).")


@WEIGHTINGS.register("cagrad", settings=CAGradSettings)
class CAGradMethod(GramianMethod):
    """CAGrad (Liu et al., 2021, "Conflict-Averse Gradient Descent"): the update within a ball of radius c·‖ḡ‖ around
    the average gradient ḡ that maximises the worst task's improvement."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks, CAGradWeighting(c=cfg.c))


@WEIGHTINGS.register("imtl_g", settings=GradientSettings)
class IMTLGMethod(GramianMethod):
    """IMTL-G (Liu et al., 2021, "Towards Impartial Multi-task Learning"): weights that make the update's
    projection equal on every task's unit gradient."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks, IMTLGWeighting())


@WEIGHTINGS.register("aligned_mtl", settings=GradientSettings)
class AlignedMTLMethod(GramianMethod):
    """Aligned-MTL (Senushkin et al., 2023, "Independent Component Alignment for Multi-Task Learning"): the task
    gradients aligned to an orthogonal system of equal norms (condition number 1) before they are combined."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks, AlignedMTLWeighting())


@WEIGHTINGS.register("dualproj", settings=GradientSettings)
class DualProjMethod(GramianMethod):
    """DualProj (Lopez-Paz & Ranzato, 2017, as in GEM): the average gradient projected onto the dual cone of the
    task gradients, so that it conflicts with none."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks, DualProjWeighting())


class NashMTLSettings(GradientSettings):
    """The ``weighting`` keys of ``nash_mtl``."""

    update_interval: int = Field(1, ge=1, description="Steps between two solves of the bargaining problem (the last "
                                                      "weights are reused in between).")
    max_norm: float = Field(1.0, ge=0, description="Largest norm of the update (0: no clipping).")
    solver_iterations: int = Field(20, ge=1, description="Iterations of the concave-convex procedure per solve.")


@WEIGHTINGS.register("nash_mtl", settings=NashMTLSettings)
class NashMTLMethod(GradientWeighting):
    """Nash-MTL (Navon et al., 2022, "Multi-Task Learning as a Bargaining Game"): the Nash bargaining solution,
    weights α with (J·Jᵀ)·α = 1/α, solved with cvxpy every ``update_interval`` steps. Its last weights are state:
    a resumed run solves again at its first step, warm-started from them."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks)
        self.rule = NashMTL(n_tasks=len(tasks), max_norm=cfg.max_norm, update_weights_every=cfg.update_interval,
                            optim_niter=cfg.solver_iterations)

    def aggregate(self, jacobian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with warnings.catch_warnings():  # cvxpy notes, every solve, that this problem is not parametrised for speed
            warnings.filterwarnings("ignore", message="You are solving a parameterized problem that is not DPP")
            weights = self.rule.weighting(jacobian)
        return weights @ jacobian, weights

    def get_extra_state(self) -> dict:
        return {"alpha": torch.from_numpy(np.asarray(self.rule.weighting.prvs_alpha, dtype=np.float64))}

    def set_extra_state(self, state: dict) -> None:
        self.rule.reset()
        self.rule.weighting.prvs_alpha = state["alpha"].numpy().astype(np.float32)


class GradDropSettings(GradientSettings):
    """The ``weighting`` keys of ``graddrop``."""

    leak: float = Field(0.0, ge=0, le=1, description="Share of every task gradient that passes whatever its sign.")


@WEIGHTINGS.register("graddrop", settings=GradDropSettings)
class GradDropMethod(GradientWeighting):
    """GradDrop (Chen et al., 2020, "Just Pick a Sign"): per coordinate, a random sign is kept with the probability
    of the gradients' sign purity there, and the task gradients of the other sign are dropped."""

    random = True

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks)
        self.rule = GradDrop(leak=torch.full((len(tasks),), cfg.leak))

    def aggregate(self, jacobian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.rule.leak = self.rule.leak.to(jacobian)
        direction = self.rule(jacobian)
        return direction, effective_weights(jacobian, direction)


@WEIGHTINGS.register("config", settings=GradientSettings)
class ConFIGMethod(GradientWeighting):
    """ConFIG (Liu et al., 2024, "Conflict-Free Inverse Gradients"): the direction with an equal positive cosine to
    every task gradient, scaled by the sum of their projections on it."""

    def __init__(self, cfg: WeightingConfig, tasks: list[str]) -> None:
        super().__init__(cfg, tasks)
        self.rule = ConFIG()

    def aggregate(self, jacobian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        direction = self.rule(jacobian)
        return direction, effective_weights(jacobian, direction)
