"""Tiny data sets written in the real on-disk formats (no network): CIFAR-100 pickles, an Oxford-IIIT Pet
tree with JPEG images, PNG trimaps and VOC XML files, MNIST idx files, an Omniglot image tree."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_cifar100(root: Path, n_train: int = 12, n_test: int = 6, seed: int = 0) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` with the real pickle keys (bytes, protocol of the release)."""
    rng = np.random.default_rng(seed)
    directory = root / "cifar-100-python"
    directory.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n).tolist()
        batch = {b"filenames": [f"img{i}.png".encode() for i in range(n)], b"batch_label": name.encode(),
                 b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                 b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f)
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    with open(directory / "meta", "wb") as f:
        pickle.dump(meta, f)
    return directory


PET_ROWS = [("Abyssinian_1", 1, 1, 1), ("Abyssinian_2", 1, 1, 1), ("beagle_1", 2, 2, 1), ("beagle_2", 2, 2, 1),
            ("Bengal_1", 3, 1, 2), ("boxer_1", 4, 2, 2)]


def write_oxford_pet(root: Path, without_xml: tuple[str, ...] = ("Bengal_1",), seed: int = 0) -> Path:
    """images/*.jpg, annotations/{list,trainval,test}.txt, trimaps/*.png (values 1..3), xmls/*.xml."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    (root / "annotations" / "xmls").mkdir(parents=True)
    lines = ["#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids", "#SPECIES: 1:Cat 2:Dog"]
    for name, class_id, species, breed in PET_ROWS:
        width, height = 40, 30
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / "images" / f"{name}.jpg")
        trimap = np.full((height, width), 2, np.uint8)
        trimap[5:25, 10:30] = 1
        trimap[5, 10:30] = 3
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
        if name not in without_xml:
            (root / "annotations" / "xmls" / f"{name}.xml").write_text(
                f"<annotation><filename>{name}.jpg</filename><size><width>{width}</width><height>{height}</height>"
                "<depth>3</depth></size><object><name>head</name><bndbox><xmin>10</xmin><ymin>6</ymin>"
                "<xmax>30</xmax><ymax>24</ymax></bndbox></object></annotation>")
        lines.append(f"{name} {class_id} {species} {breed}")
    (root / "annotations" / "list.txt").write_text("\n".join(lines) + "\n")
    names = [r[0] for r in PET_ROWS]
    (root / "annotations" / "trainval.txt").write_text("\n".join(f"{n} 1 1 1" for n in names[:4]) + "\n")
    (root / "annotations" / "test.txt").write_text("\n".join(f"{n} 1 1 1" for n in names[4:]) + "\n")
    return root


def write_mnist(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Path:
    """``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` in the idx format."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())
    return root


def write_omniglot(root: Path, alphabets=("Greek", "Japanese_(hiragana)", "Korean"), per_alphabet: int = 4) -> Path:
    """``root/omniglot-py/images_background/<alphabet>/<character>/*.png`` (105×105, black strokes on white)."""
    rng = np.random.default_rng(0)
    base = root / "omniglot-py" / "images_background"
    for alphabet in alphabets:
        for c in range(2):
            character = base / alphabet / f"character{c + 1:02d}"
            character.mkdir(parents=True)
            for k in range(per_alphabet // 2):
                pixels = np.where(rng.random((105, 105)) < 0.1, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).convert("1").save(character / f"{c:04d}_{k:02d}.png")
    return root
