"""Weighting: per-task losses → the gradients the optimizer steps on. Methods register by name; loss-level ones
combine the losses, gradient-level ones aggregate the task gradients (:mod:`distmtl.weighting.aggregation`).

Importing the package registers every built-in method.
"""

from distmtl.weighting import aggregators, dwa, famo, gradnorm, rlw, uncertainty  # noqa: F401  (they register)
from distmtl.weighting.base import WEIGHTINGS, ParameterSplit, Step, Weighting, build_weighting
from distmtl.weighting.reach import split_parameters

__all__ = ["WEIGHTINGS", "ParameterSplit", "Step", "Weighting", "build_weighting", "split_parameters"]
