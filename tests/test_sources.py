"""Every source read from tiny files in its real on-disk format; bad roots give one-line errors."""

import numpy as np
import pytest
import torch

from distmtl.config.schema import DataConfig
from distmtl.data.sources import build_samples, build_source, source_targets
from distmtl.errors import DistmtlError
from fake_datasets import PET_ROWS, write_cifar100, write_mnist, write_omniglot, write_oxford_pet


def test_digits_tasks_are_consistent():
    samples = build_source(DataConfig(source="digits", image_size=16))
    assert len(samples) == 1797 and samples.image_shape == (1, 16, 16)
    digit = samples.targets["digit"]
    assert torch.equal(samples.targets["parity"], digit % 2)
    assert torch.equal(samples.targets["ge5"], (digit >= 5).long())
    for d in range(10):
        assert torch.equal(samples.targets[f"is_{d}"], (digit == d).long())
        assert samples.specs[f"is_{d}"].kind == "binary"


def test_cifar100_reads_fine_and_coarse_labels_and_the_official_test_split(tmp_path):
    write_cifar100(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-100-python"):
        samples = build_source(DataConfig(source="cifar100", root=str(root), image_size=32))
        assert len(samples) == 18 and samples.image_shape == (3, 32, 32)
        assert torch.equal(samples.targets["coarse"], samples.targets["fine"] // 5)
        assert samples.test_mask.tolist() == [False] * 12 + [True] * 6
        assert samples.class_names["coarse"][3] == "coarse3"


def test_cifar100_pixels_are_the_pickled_ones(tmp_path):
    import pickle

    directory = write_cifar100(tmp_path)
    with open(directory / "train", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][0].reshape(3, 32, 32)
    samples = build_source(DataConfig(source="cifar100", root=str(tmp_path), image_size=32))
    assert np.array_equal(samples.images[0].numpy(), raw)


def test_oxford_pet_targets_boxes_trimaps_and_masking(tmp_path):
    write_oxford_pet(tmp_path)
    samples = build_source(DataConfig(source="oxford_pet", root=str(tmp_path), image_size=20))
    assert len(samples) == len(PET_ROWS) and samples.image_shape == (3, 20, 20)
    assert samples.targets["breed"].tolist() == [r[1] - 1 for r in PET_ROWS]
    assert samples.targets["species"].tolist() == [r[2] - 1 for r in PET_ROWS]
    assert samples.has_target["head"].tolist() == [True, True, True, True, False, True]
    assert torch.allclose(samples.targets["head"][0], torch.tensor([10 / 40, 6 / 30, 30 / 40, 24 / 30]))
    trimap = samples.targets["trimap"][0]
    assert trimap.shape == (20, 20) and set(trimap.unique().tolist()) <= {0, 1, 2} and trimap[10, 10] == 0
    assert samples.test_mask.tolist() == [False] * 4 + [True] * 2


def test_mnist_through_torchvision_as_a_homogeneous_problem(tmp_path):
    write_mnist(tmp_path)
    samples = build_source(DataConfig(source="mnist", root=str(tmp_path), image_size=16))
    assert len(samples) == 30 and samples.image_shape == (1, 16, 16)
    assert samples.targets["digit"].tolist() == list(range(10)) * 3
    assert all(samples.targets[f"is_{d}"].sum() == 3 for d in range(10))
    assert samples.test_mask.sum() == 10


def test_omniglot_one_binary_task_per_alphabet(tmp_path):
    write_omniglot(tmp_path)
    cfg = DataConfig(source="omniglot", root=str(tmp_path), image_size=16)
    specs = source_targets(cfg)
    assert set(specs) == {"alphabet", "alphabet_greek", "alphabet_japanese_hiragana", "alphabet_korean"}
    samples = build_source(cfg)
    assert len(samples) == 12 and samples.image_shape == (1, 16, 16)
    assert samples.targets["alphabet"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert samples.targets["alphabet_korean"].tolist() == [0] * 8 + [1] * 4


def test_combined_sources_mask_the_tasks_a_part_lacks():
    cfg = DataConfig(source="combined", image_size=16, parts=[
        {"source": "digits", "num_samples": 30, "tasks": ["digit"]},
        {"source": "synthetic", "num_samples": 20, "tasks": ["shape", "colour"]},
    ])
    samples = build_samples(cfg, ["digit", "shape"])
    assert len(samples) == 50 and samples.image_shape == (3, 16, 16)
    assert samples.has_target["digit"].tolist() == [True] * 30 + [False] * 20
    assert samples.has_target["shape"].tolist() == [False] * 30 + [True] * 20
    assert len(np.unique(samples.groups)) == 50
    grey = samples.images[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


@pytest.mark.parametrize(
    "source, make, expected",
    [
        ("cifar100", None, "does not exist"),
        ("cifar100", lambda p: (p / "cifar-100-python").mkdir(), "lacks train, test, meta"),
        ("oxford_pet", lambda p: (p / "images").mkdir(), "annotations/list.txt not found"),
        ("mnist", lambda p: (p / "MNIST").mkdir(), "no MNIST files under"),
        ("omniglot", lambda p: (p / "omniglot-py").mkdir(), "no alphabets in"),
        ("hdf5", None, "does not exist"),
    ],
)
def test_missing_root_or_wrong_layout(tmp_path, source, make, expected):
    root = tmp_path / "data"
    if make:
        root.mkdir()
        make(root)
    with pytest.raises(DistmtlError) as info:
        build_source(DataConfig(source=source, root=str(root), image_size=16))
    assert expected in str(info.value) and str(root) in str(info.value) and "\n" not in str(info.value)


def test_a_file_source_without_root_says_what_to_set():
    with pytest.raises(DistmtlError, match="data.root: source 'cifar100' reads files; set data.root"):
        build_source(DataConfig(source="cifar100"))


def test_a_damaged_pickle_is_reported(tmp_path):
    directory = write_cifar100(tmp_path)
    (directory / "train").write_bytes(b"not a pickle")
    with pytest.raises(DistmtlError, match="cannot read .*train as a CIFAR-100 pickle"):
        build_source(DataConfig(source="cifar100", root=str(tmp_path)))


def test_a_task_the_source_lacks():
    with pytest.raises(DistmtlError, match=r"source 'digits' has no target \['fine'\]"):
        build_samples(DataConfig(source="digits", image_size=16), ["digit", "fine"])
