"""What an encoder hands to task heads: a flat bottleneck vector and its stage feature maps.

A leaf module (torch only): encoders in ``models`` produce these and heads in ``tasks`` consume
them, so neither package needs to import the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class FeatureShape:
    """Sizes heads are built for: bottleneck width, channels of each stage map, input image channels."""

    vector: int
    maps: tuple[int, ...]
    image_channels: int

    def widened(self, extra: int) -> FeatureShape:
        """The same with ``extra`` more vector features (e.g. another head's output concatenated)."""
        return replace(self, vector=self.vector + extra)


@dataclass
class Features:
    """An encoder's output: ``vector`` (B×D), ``maps`` (one B×C×h×w per stage, fine to coarse), and the
    input's spatial ``size`` that dense heads (segmentation, reconstruction) decode back to."""

    vector: torch.Tensor
    maps: list[torch.Tensor]
    size: tuple[int, int]

    def with_vector(self, vector: torch.Tensor) -> Features:
        return Features(vector, self.maps, self.size)
