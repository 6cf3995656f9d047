"""Models: encoders and sharing architectures, each looked up by name in a registry.

Importing the package registers every built-in encoder and architecture.
"""

from distmtl.models import (  # noqa: F401  (the modules register themselves)
    aux_transfer,
    cross_stitch,
    encoders,
    hard_sharing,
    independent,
    label_reuse,
    selective_sharing,
)
from distmtl.models.base import ARCHITECTURES, MultiTaskModel, build_model

__all__ = ["ARCHITECTURES", "MultiTaskModel", "build_model"]
