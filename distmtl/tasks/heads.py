"""Task heads: a linear layer on the bottleneck vector, or a decoder back to the input's size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distmtl.features import Features, FeatureShape


class VectorHead(nn.Module):
    """A linear map of the bottleneck vector to ``out_features`` outputs."""

    def __init__(self, shape: FeatureShape, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(shape.vector, out_features)

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    def forward(self, features: Features) -> torch.Tensor:
        return self.linear(features.vector)


class DenseDecoder(nn.Module):
    """A U-Net-style decoder: from the coarsest stage map, upsample to each finer stage's size, concatenate
    that stage's map (skip connection), convolve; finally a 1×1 convolution to ``out_channels`` and an
    upsampling to the input size. Works with any encoder's stages."""

    def __init__(self, shape: FeatureShape, out_channels: int) -> None:
        super().__init__()
        maps = list(shape.maps)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(coarse + fine, fine, 3, padding=1, bias=False), nn.BatchNorm2d(fine),
                          nn.ReLU(inplace=True))
            for coarse, fine in zip(maps[:0:-1], maps[-2::-1])
        )
        self.out = nn.Conv2d(maps[0], out_channels, 1)

    def forward(self, features: Features) -> torch.Tensor:
        x = features.maps[-1]
        for block, skip in zip(self.blocks, reversed(features.maps[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return F.interpolate(self.out(x), size=features.size, mode="bilinear", align_corners=False)
