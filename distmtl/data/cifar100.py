"""CIFAR-100 from the ``cifar-100-python`` pickles, with both label sets.

``data.root`` is the ``cifar-100-python`` directory (holding ``train``, ``test``, ``meta``) or
its parent. Targets: ``fine`` (100 classes) and ``coarse`` (20 superclasses), read from the
pickles' ``fine_labels`` and ``coarse_labels`` (torchvision's class reads only the fine ones).
The official test batch is the test split.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from distmtl.config.schema import DataConfig
from distmtl.data.sample_set import SampleSet, TargetSpec
from distmtl.data.sources import all_present, register_source, require_root, resize_images, subset
from distmtl.errors import DistmtlError

EXPECTED = "the cifar-100-python directory (train, test, meta pickles) or its parent"
BATCH_KEYS = (b"data", b"fine_labels", b"coarse_labels")
META_KEYS = (b"fine_label_names", b"coarse_label_names")


def cifar100_specs(cfg: DataConfig | None = None) -> dict[str, TargetSpec]:
    return {"fine": TargetSpec("classification", 100, "CIFAR-100 class"),
            "coarse": TargetSpec("classification", 20, "CIFAR-100 superclass")}


def _directory(cfg: DataConfig) -> Path:
    root = require_root(cfg, EXPECTED)
    directory = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
    missing = [n for n in ("train", "test", "meta") if not (directory / n).is_file()]
    if missing:
        raise DistmtlError(f"data.root: {directory} lacks {', '.join(missing)} (expected {EXPECTED})")
    return directory


def _unpickle(path: Path, keys: tuple[bytes, ...]) -> dict:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise DistmtlError(f"cannot read {path} as a CIFAR-100 pickle ({type(exc).__name__}): "
                           "re-extract the archive") from None
    missing = [k.decode() for k in keys if k not in batch]
    if missing:
        raise DistmtlError(f"{path} lacks the keys {missing}: not a cifar-100-python pickle")
    return batch


def check_files(cfg: DataConfig) -> None:
    """Read the three pickles as the source does (about a second for the whole set), so that a damaged root
    is reported once, before anything starts, rather than by every worker."""
    directory = _directory(cfg)
    for name, keys in (("meta", META_KEYS), ("test", BATCH_KEYS), ("train", BATCH_KEYS)):
        _unpickle(directory / name, keys)


@register_source("cifar100", cifar100_specs, verify=check_files)
def cifar100_source(cfg: DataConfig) -> SampleSet:
    directory = _directory(cfg)
    train, test = (_unpickle(directory / n, BATCH_KEYS) for n in ("train", "test"))
    meta = _unpickle(directory / "meta", META_KEYS)
    data = np.concatenate([train[b"data"], test[b"data"]]).reshape(-1, 3, 32, 32)
    fine = np.concatenate([train[b"fine_labels"], test[b"fine_labels"]])
    coarse = np.concatenate([train[b"coarse_labels"], test[b"coarse_labels"]])
    is_test = np.arange(len(fine)) >= len(train[b"fine_labels"])
    keep = subset(cfg, len(fine))
    targets = {"fine": torch.from_numpy(fine[keep]).long(), "coarse": torch.from_numpy(coarse[keep]).long()}
    return SampleSet(
        images=resize_images(torch.from_numpy(np.ascontiguousarray(data[keep])), cfg.image_size),
        targets=targets, has_target=all_present(targets), groups=np.arange(len(keep)), specs=cifar100_specs(),
        class_names={"fine": [n.decode() for n in meta[b"fine_label_names"]],
                     "coarse": [n.decode() for n in meta[b"coarse_label_names"]]},
        test_mask=is_test[keep],
    )
