"""Image encoders: images → a flat bottleneck representation of configurable width, with dropout."""

from __future__ import annotations

from torch import nn

from distmtl.config.schema import ModelConfig
from distmtl.registry import Registry

ENCODERS: Registry = Registry("encoder", "model.encoder")


class Encoder(nn.Module):
    """Base class: ``out_features`` is the width of the representation ``forward`` returns."""

    out_features: int


@ENCODERS.register("small_cnn")
class SmallCNN(Encoder):
    """Conv-BN-ReLU-MaxPool blocks, global average pooling, then a linear bottleneck with dropout."""

    def __init__(self, cfg: ModelConfig, in_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for channels in cfg.channels:
            layers += [
                nn.Conv2d(width, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            width = channels
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.bottleneck = nn.Sequential(nn.Linear(width, cfg.bottleneck), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout))
        self.out_features = cfg.bottleneck

    def forward(self, x):
        return self.bottleneck(self.features(x))
