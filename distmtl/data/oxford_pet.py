"""The Oxford-IIIT Pet data set in its released layout.

``data.root`` holds ``images/<name>.jpg`` and ``annotations/`` with ``list.txt``, ``trainval.txt``,
``test.txt``, ``trimaps/<name>.png`` and ``xmls/<name>.xml``. Targets: ``breed`` (37 classes),
``species`` (binary: dog), ``head`` (the head box from the XML file, x0, y0, x1, y1 in [0, 1];
images without an XML file are masked out of this task) and ``trimap`` (segmentation into
foreground / background / boundary). Samples listed in ``test.txt`` form the test split.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from distmtl.config.schema import DataConfig
from distmtl.data.sample_set import SampleSet, TargetSpec
from distmtl.data.sources import register_source, require_root, resize_images, resize_masks, subset
from distmtl.errors import DistmtlError

EXPECTED = "the Oxford-IIIT Pet root (images/, annotations/list.txt, annotations/trimaps/, annotations/xmls/)"
BREEDS = 37


def pet_specs(cfg: DataConfig | None = None) -> dict[str, TargetSpec]:
    return {
        "breed": TargetSpec("classification", BREEDS, "pet breed"),
        "species": TargetSpec("binary", 1, "dog (1) or cat (0)"),
        "head": TargetSpec("detection", 4, "head box x0, y0, x1, y1"),
        "trimap": TargetSpec("segmentation", 3, "foreground / background / boundary"),
    }


def _listing(root: Path) -> list[tuple[str, int, int]]:
    """(image name, breed 0..36, species 0 cat / 1 dog) for every line of annotations/list.txt."""
    path = root / "annotations" / "list.txt"
    if not path.is_file():
        raise DistmtlError(f"data.root: {path} not found (expected {EXPECTED})")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        try:
            rows.append((parts[0], int(parts[1]) - 1, int(parts[2]) - 1))
        except (IndexError, ValueError):
            raise DistmtlError(f"{path} line {number}: "
                               f"expected 'NAME CLASS-ID SPECIES BREED-ID', got '{line}'") from None
    return rows


def _head_box(path: Path) -> np.ndarray | None:
    """The head box of one XML annotation, normalised by the image size; None without a file."""
    if not path.is_file():
        return None
    try:
        tree = ET.parse(path).getroot()
        width, height = float(tree.findtext("size/width")), float(tree.findtext("size/height"))
        box = tree.find("object/bndbox")
        x0, y0, x1, y1 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    except (ET.ParseError, AttributeError, TypeError, ValueError):
        raise DistmtlError(f"{path}: not a Pascal VOC annotation with size and object/bndbox") from None
    return np.array([x0 / width, y0 / height, x1 / width, y1 / height], dtype=np.float32)


def _read(path: Path, mode: str, what: str) -> np.ndarray:
    if not path.is_file():
        raise DistmtlError(f"{what} {path} not found (expected {EXPECTED})")
    with Image.open(path) as image:
        return np.asarray(image.convert(mode))


@register_source("oxford_pet", pet_specs)
def oxford_pet_source(cfg: DataConfig) -> SampleSet:
    root = require_root(cfg, EXPECTED)
    rows = [_listing(root)[i] for i in subset(cfg, len(_listing(root)))]
    test_path = root / "annotations" / "test.txt"
    test_names = ({line.split()[0] for line in test_path.read_text().splitlines() if line.strip()}
                  if test_path.is_file() else set())
    size = cfg.image_size
    images, trimaps, boxes, has_box = [], [], [], []
    for name, _, _ in rows:
        image = torch.from_numpy(_read(root / "images" / f"{name}.jpg", "RGB", "image").copy()).permute(2, 0, 1)
        images.append(resize_images(image[None], size)[0])
        trimap = torch.from_numpy(
            _read(root / "annotations" / "trimaps" / f"{name}.png", "L", "trimap").astype(np.int64))
        trimaps.append(resize_masks((trimap - 1).clamp(0, 2)[None], size)[0])
        box = _head_box(root / "annotations" / "xmls" / f"{name}.xml")
        boxes.append(box if box is not None else np.zeros(4, np.float32))
        has_box.append(box is not None)
    n = len(rows)
    targets = {
        "breed": torch.tensor([r[1] for r in rows]),
        "species": torch.tensor([r[2] for r in rows]),
        "head": torch.from_numpy(np.stack(boxes)) if n else torch.zeros(0, 4),
        "trimap": torch.stack(trimaps) if n else torch.zeros(0, size, size, dtype=torch.long),
    }
    has_target = {t: torch.ones(n, dtype=torch.bool) for t in targets}
    has_target["head"] = torch.tensor(has_box, dtype=torch.bool)
    return SampleSet(
        images=torch.stack(images) if n else torch.zeros(0, 3, size, size, dtype=torch.uint8),
        targets=targets, has_target=has_target, groups=np.arange(n), specs=pet_specs(),
        class_names={"breed": sorted({name.rsplit("_", 1)[0] for name, breed, _ in rows}, key=lambda b: b)},
        test_mask=np.array([name in test_names for name, _, _ in rows], dtype=bool),
    )
