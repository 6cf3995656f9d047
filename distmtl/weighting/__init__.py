"""Loss weighting: per-task losses → one scalar. Strategies register by name.

Importing the package registers every built-in strategy.
"""

from distmtl.weighting import dwa, uncertainty  # noqa: F401  (the modules register themselves)
from distmtl.weighting.base import WEIGHTINGS, Weighting, build_weighting

__all__ = ["WEIGHTINGS", "Weighting", "build_weighting"]
