"""Image encoders: a sequence of stages (feature maps, fine to coarse) and a bottleneck of
configurable width with dropout on top. Heads read the bottleneck vector; dense heads also read
the stage maps (skip connections); cross-stitch networks mix branches between stages.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from distmtl.config.schema import ModelConfig
from distmtl.errors import ConfigError, DistmtlError
from distmtl.features import Features, FeatureShape
from distmtl.registry import Registry

ENCODERS: Registry = Registry("encoder", "model.encoder")


class Encoder(nn.Module):
    """``stages`` (an nn.ModuleList) then ``bottleneck``: global pooling → linear → ReLU → dropout."""

    def __init__(self, stages: list[nn.Module], stage_channels: list[int], cfg: ModelConfig, in_channels: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.stage_channels = list(stage_channels)
        self.in_channels = in_channels
        self.bottleneck = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        nn.Linear(stage_channels[-1], cfg.bottleneck),
                                        nn.ReLU(inplace=True), nn.Dropout(cfg.dropout))
        self.out_features = cfg.bottleneck

    @property
    def shape(self) -> FeatureShape:
        return FeatureShape(self.out_features, tuple(self.stage_channels), self.in_channels)

    def forward(self, x: torch.Tensor) -> Features:
        size = tuple(x.shape[-2:])
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return Features(self.bottleneck(x), maps, size)  # type: ignore[arg-type]


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


@ENCODERS.register("small_cnn")
def small_cnn(cfg: ModelConfig, in_channels: int) -> Encoder:
    """Conv-BN-ReLU-MaxPool stages of ``model.channels``: fast, for small images."""
    widths = [in_channels, *cfg.channels]
    return Encoder([_conv_block(a, b) for a, b in zip(widths, widths[1:])], cfg.channels, cfg, in_channels)


@ENCODERS.register("sketch_a_net")
def sketch_a_net(cfg: ModelConfig, in_channels: int) -> Encoder:
    """A Sketch-a-Net-style encoder (Yu et al., 2015) for 224×224 greyscale sketches: a large 15×15
    stride-3 first filter for sparse strokes, then 5×5 and three 3×3 convolutions, a 7×7 and a 1×1."""
    relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
    stages = [
        nn.Sequential(nn.Conv2d(in_channels, 64, 15, stride=3), relu(), nn.MaxPool2d(3, 2)),
        nn.Sequential(nn.Conv2d(64, 128, 5, padding=2), relu(), nn.MaxPool2d(3, 2)),
        nn.Sequential(nn.Conv2d(128, 256, 3, padding=1), relu(), nn.Conv2d(256, 256, 3, padding=1), relu(),
                      nn.Conv2d(256, 256, 3, padding=1), relu(), nn.MaxPool2d(3, 2)),
        nn.Sequential(nn.Conv2d(256, 512, 7, padding=3), relu(), nn.Dropout(cfg.dropout),
                      nn.Conv2d(512, 512, 1), relu()),
    ]
    return Encoder(stages, [64, 128, 256, 512], cfg, in_channels)


def _resnet(depth: int):
    def build(cfg: ModelConfig, in_channels: int) -> Encoder:
        """torchvision ResNet, randomly initialised unless ``model.weights`` names a local state-dict file."""
        from torchvision.models import resnet18, resnet34

        net = (resnet18 if depth == 18 else resnet34)(weights=None)
        if cfg.weights:
            _load_local_weights(net, cfg.weights)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        return Encoder([stem, net.layer2, net.layer3, net.layer4], [64, 128, 256, 512], cfg, in_channels)

    return build


ENCODERS.register("resnet18")(_resnet(18))
ENCODERS.register("resnet34")(_resnet(34))


def _load_local_weights(net: nn.Module, path: str) -> None:
    """Load a torchvision state dict from disk (never from the network); the fc layer is not used."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"model.weights: {file} not found (a local .pth state dict of the torchvision ResNet)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except (RuntimeError, KeyError, OSError) as exc:
        raise DistmtlError(f"model.weights: {file} is not a state dict of this ResNet "
                           f"({str(exc).splitlines()[0]})") from None
