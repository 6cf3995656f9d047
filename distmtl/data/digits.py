"""scikit-learn's bundled handwritten digits (1,797 8×8 greyscale images): real data, no download.

Targets: ``digit`` (10 classes), ``parity`` (binary: odd), ``ge5`` (binary: digit ≥ 5), and the
ten one-vs-all binary tasks ``is_0`` … ``is_9`` (a homogeneous problem for Selective Sharing).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from distmtl.config.schema import DataConfig
from distmtl.data.sample_set import SampleSet, TargetSpec
from distmtl.data.sources import all_present, one_vs_all, register_source, resize_images, subset

NAMES = [str(d) for d in range(10)]


def digits_specs(cfg: DataConfig | None = None) -> dict[str, TargetSpec]:
    specs = {
        "digit": TargetSpec("classification", 10, "the digit"),
        "parity": TargetSpec("binary", 1, "odd digit"),
        "ge5": TargetSpec("binary", 1, "digit >= 5"),
    }
    specs.update({f"is_{d}": TargetSpec("binary", 1, f"one-vs-all: {d}") for d in NAMES})
    return specs


@register_source("digits", digits_specs)
def digits_source(cfg: DataConfig) -> SampleSet:
    data = load_digits()
    keep = subset(cfg, len(data.target))
    pixels = np.round(data.images[keep] * (255.0 / 16.0)).astype(np.uint8)
    images = resize_images(torch.from_numpy(pixels)[:, None], cfg.image_size)
    digit = torch.from_numpy(data.target[keep]).long()
    targets = {"digit": digit, "parity": digit % 2, "ge5": (digit >= 5).long()}
    binary, _ = one_vs_all(digit, NAMES, "is_")
    targets.update(binary)
    return SampleSet(images, targets, all_present(targets), np.arange(len(keep)), digits_specs(),
                     class_names={"digit": NAMES})
