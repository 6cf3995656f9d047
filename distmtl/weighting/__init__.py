"""Loss weighting: per-task losses → one scalar. Strategies register by name."""

from distmtl.weighting.base import WEIGHTINGS, Weighting, build_weighting

__all__ = ["WEIGHTINGS", "Weighting", "build_weighting"]
