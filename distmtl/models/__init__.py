"""Models: encoders and sharing architectures, each looked up by name in a registry."""

from distmtl.models.base import MultiTaskModel, build_model

__all__ = ["MultiTaskModel", "build_model"]
