"""MNIST (through torchvision, ``download=False``) and Omniglot (torchvision's layout) from a local root, as
homogeneous problems: one binary one-vs-all task per class (MNIST digits) or per alphabet
(Omniglot's background set), beside the plain multi-class task.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from distmtl.config.schema import DataConfig
from distmtl.data.sample_set import SampleSet, TargetSpec
from distmtl.data.sources import all_present, one_vs_all, register_source, require_root, resize_images, subset
from distmtl.errors import DistmtlError

MNIST_EXPECTED = "a directory holding MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (torchvision's layout)"
OMNIGLOT_EXPECTED = "a directory holding omniglot-py/images_background/<alphabet>/<character>/*.png"
DIGITS = [str(d) for d in range(10)]


def mnist_specs(cfg: DataConfig | None = None) -> dict[str, TargetSpec]:
    specs = {"digit": TargetSpec("classification", 10, "the digit")}
    specs.update({f"is_{d}": TargetSpec("binary", 1, f"one-vs-all: {d}") for d in DIGITS})
    return specs


@register_source("mnist", mnist_specs)
def mnist_source(cfg: DataConfig) -> SampleSet:
    from torchvision.datasets import MNIST

    root = require_root(cfg, MNIST_EXPECTED)
    try:
        parts = [MNIST(str(root), train=train, download=False) for train in (True, False)]
    except RuntimeError:
        raise DistmtlError(f"data.root: no MNIST files under {root} (expected {MNIST_EXPECTED})") from None
    images = torch.cat([p.data for p in parts])
    labels = torch.cat([p.targets for p in parts]).long()
    is_test = np.arange(len(labels)) >= len(parts[0].targets)
    keep = subset(cfg, len(labels))
    targets = {"digit": labels[keep]}
    binary, _ = one_vs_all(labels[keep], DIGITS, "is_")
    targets.update(binary)
    return SampleSet(resize_images(images[keep][:, None], cfg.image_size), targets, all_present(targets),
                     np.arange(len(keep)), mnist_specs(), class_names={"digit": DIGITS}, test_mask=is_test[keep])


def _alphabets(cfg: DataConfig) -> list[str]:
    root = require_root(cfg, OMNIGLOT_EXPECTED)
    directory = root / "omniglot-py" / "images_background"
    alphabets = sorted(p.name for p in directory.iterdir() if p.is_dir()) if directory.is_dir() else []
    if not alphabets:
        raise DistmtlError(f"data.root: no alphabets in {directory} (expected {OMNIGLOT_EXPECTED})")
    return alphabets


def task_name(alphabet: str) -> str:
    """``Japanese_(hiragana)`` → ``japanese_hiragana``: a task name safe in metric keys."""
    return re.sub(r"[^0-9a-z]+", "_", alphabet.lower()).strip("_")


def omniglot_specs(cfg: DataConfig) -> dict[str, TargetSpec]:
    alphabets = _alphabets(cfg)
    specs = {"alphabet": TargetSpec("classification", len(alphabets), "the alphabet")}
    specs.update({f"alphabet_{task_name(a)}": TargetSpec("binary", 1, f"one-vs-all: {a}") for a in alphabets})
    return specs


@register_source("omniglot", omniglot_specs)
def omniglot_source(cfg: DataConfig) -> SampleSet:
    """Reads torchvision's extracted layout directly: torchvision's ``Omniglot`` class insists on the
    downloaded zip (it checks the archive's MD5), which a local copy of the images may not have."""
    from PIL import Image

    alphabets = _alphabets(cfg)
    directory = Path(cfg.root).expanduser() / "omniglot-py" / "images_background"
    files = [(path, a) for a, name in enumerate(alphabets) for path in sorted((directory / name).glob("*/*.png"))]
    if not files:
        raise DistmtlError(f"data.root: no character images under {directory} (expected {OMNIGLOT_EXPECTED})")
    keep = subset(cfg, len(files))
    pixels = []
    for i in keep:
        with Image.open(files[i][0]) as image:
            pixels.append(torch.from_numpy(np.asarray(image.convert("L"), dtype=np.uint8).copy()))
    alphabet = torch.tensor([files[i][1] for i in keep], dtype=torch.long)
    targets = {"alphabet": alphabet}
    binary, _ = one_vs_all(alphabet, [task_name(a) for a in alphabets], "alphabet_")
    targets.update(binary)
    images = resize_images(torch.stack(pixels)[:, None], cfg.image_size)
    return SampleSet(images, targets, all_present(targets), np.arange(len(keep)), omniglot_specs(cfg),
                     class_names={"alphabet": alphabets})
