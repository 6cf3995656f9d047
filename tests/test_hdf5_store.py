"""The HDF5 store: round trip, chunk-aware shuffling, rank shards, batch reads, atomic writes, damaged files."""

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from distmtl.cli import main
from distmtl.config.schema import AugmentConfig, DataConfig
from distmtl.data.augment import Augmenter
from distmtl.data.batch_loader import make_loader
from distmtl.data.chunk_sampler import ChunkShuffleSampler
from distmtl.data.hdf5_store import H5SampleSet, write_store
from distmtl.data.sample_set import SampleSet, TargetSpec
from distmtl.data.sources import build_source
from distmtl.data.synthetic import generate
from distmtl.errors import DistmtlError
from fake_datasets import write_oxford_pet


@pytest.fixture(scope="module")
def synthetic():
    return generate(150, 16, seed=0)


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_round_trip_gives_the_same_samples(tmp_path, synthetic, compression):
    path = write_store(synthetic, tmp_path / "s.h5", source="synthetic", chunk=32, compression=compression)
    store = H5SampleSet(path)
    assert len(store) == 150 and store.image_shape == (3, 16, 16) and store.chunk == 32
    assert store.specs == synthetic.specs and store.class_names == synthetic.class_names
    indices = np.array([5, 0, 149, 77, 5])
    memory, disk = synthetic.dataset(indices), store.dataset(indices)
    batch = disk.__getitems__(list(range(len(indices))))
    for i in range(len(indices)):
        for a, b in ((memory[i], disk[i]), (memory[i], batch[i])):
            assert torch.equal(a["image"], b["image"])
            for task in synthetic.specs:
                assert torch.equal(a["targets"][task], b["targets"][task])
                assert bool(a["has_target"][task]) == bool(b["has_target"][task])


def test_masks_groups_and_test_split_survive_the_round_trip(tmp_path):
    write_oxford_pet(tmp_path / "pet")
    samples = build_source(DataConfig(source="oxford_pet", root=str(tmp_path / "pet"), image_size=16))
    store = H5SampleSet(write_store(samples, tmp_path / "pet.h5", source="oxford_pet", chunk=4))
    assert torch.equal(store.has_target["head"], samples.has_target["head"])
    assert np.array_equal(store.groups, samples.groups) and np.array_equal(store.test_mask, samples.test_mask)
    assert torch.equal(store.dataset(np.arange(6))[2]["targets"]["trimap"], samples.targets["trimap"][2])


def test_chunk_shuffle_covers_every_sample_once_and_keeps_chunks_together():
    indices = np.arange(100, 300)  # dataset positions 0..199 over file rows 100..299
    sampler = ChunkShuffleSampler(indices, chunk=16)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(200))
        chunks = indices[order] // 16
        assert np.count_nonzero(np.diff(chunks)) == len(np.unique(chunks)) - 1  # each chunk read in one run
        orders.append(order)
    assert orders[0] != orders[1] != orders[2]


@pytest.mark.parametrize("n, world", [(200, 2), (101, 3), (7, 4)])
def test_rank_shards_are_disjoint_and_complete(n, world):
    indices = np.arange(n)
    shards = []
    for rank in range(world):
        sampler = ChunkShuffleSampler(indices, chunk=8, rank=rank, world_size=world, seed=3)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    assert len({len(s) for s in shards}) == 1  # equal steps on every rank, as DDP requires
    flat = [p for s in shards for p in s]
    assert set(flat) == set(range(n))
    assert len(flat) - n == len(flat) - len(set(flat)) < world  # only the wrap-round padding repeats


def _numbered(n: int) -> SampleSet:
    """Samples whose target ``row`` is their row number and whose pixels all equal it mod 251."""
    rows = torch.arange(n)
    return SampleSet(images=(rows % 251).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous(),
                     targets={"row": rows}, has_target={"row": rows % 3 > 0}, groups=rows.numpy(),
                     specs={"row": TargetSpec("classification", n)})


def _batches(loader) -> list[dict]:
    return [{"image": b["image"], "targets": dict(b["targets"]), "has_target": dict(b["has_target"])} for b in loader]


@pytest.mark.parametrize("compression, workers", [("gzip", 0), ("none", 0), ("lzf", 2)])
def test_batch_reads_give_the_batches_of_per_sample_reads(tmp_path, synthetic, compression, workers):
    """The engine's loader (one ``read_batch`` per batch) yields exactly what a DataLoader collating
    ``__getitems__`` samples yields, batch for batch, over a scattered subset and chunks that straddle batches."""
    store = H5SampleSet(write_store(synthetic, tmp_path / "s.h5", source="synthetic", chunk=24,
                                    compression=compression))
    dataset = store.dataset(np.flatnonzero(np.arange(150) % 5 != 2))
    sampler = store.train_sampler(dataset, 0, 1, seed=4)
    sampler.set_epoch(1)
    per_sample = _batches(DataLoader(dataset, batch_size=16, sampler=sampler))
    batched = _batches(make_loader(dataset, 16, sampler, workers=workers))
    assert len(batched) == len(per_sample) == 8
    for a, b in zip(per_sample, batched):
        assert torch.equal(a["image"], b["image"]) and b["image"].dtype == torch.float32
        for task in synthetic.specs:
            assert torch.equal(a["targets"][task], b["targets"][task])
            assert torch.equal(a["has_target"][task], b["has_target"][task])


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_loader_shards_two_ranks_disjointly_and_repeatably(tmp_path, workers):
    """Over 2 simulated ranks each epoch's batches cover the training rows once (bar the one padding
    row), in the same number of batches per rank, in the same order for the same seed; images match rows."""
    store = H5SampleSet(write_store(_numbered(203), tmp_path / "n.h5", source="numbered", chunk=16))
    train = np.arange(2, 203, 2)  # 101 rows, file rows 2, 4, ..., 202
    dataset = store.dataset(train)

    def epoch_rows(rank: int, seed: int, epoch: int) -> list[list[int]]:
        sampler = store.train_sampler(dataset, rank, 2, seed)
        sampler.set_epoch(epoch)
        batches = list(make_loader(dataset, 8, sampler, workers=workers))
        for b in batches:
            assert torch.equal(b["image"][:, 0, 0, 0], (b["targets"]["row"] % 251).float() / 255.0)
            assert torch.equal(b["has_target"]["row"], b["targets"]["row"] % 3 > 0)
        return [b["targets"]["row"].tolist() for b in batches]

    for epoch in (0, 1):
        ranks = [epoch_rows(rank, 7, epoch) for rank in (0, 1)]
        assert len(ranks[0]) == len(ranks[1]) == 7
        seen = [row for batches in ranks for batch in batches for row in batch]
        assert len(seen) == 102 and set(seen) == set(train.tolist())
        assert ranks == [epoch_rows(rank, 7, epoch) for rank in (0, 1)]
    assert epoch_rows(0, 7, 0) != epoch_rows(0, 7, 1) and epoch_rows(0, 7, 0) != epoch_rows(0, 8, 0)


def test_evaluation_batches_come_in_order_and_augmentation_still_applies_per_sample(tmp_path):
    store = H5SampleSet(write_store(_numbered(50), tmp_path / "n.h5", source="numbered", chunk=8))
    rows = [b["targets"]["row"].tolist() for b in make_loader(store.dataset(np.arange(10, 40)), 8)]
    assert rows == [list(range(10, 18)), list(range(18, 26)), list(range(26, 34)), list(range(34, 40))]
    flip = Augmenter(AugmentConfig(hflip=1.0), store.specs)
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).expand(6, 1, 4, 4).contiguous()
    flipped = SampleSet(images=images, targets={"row": torch.arange(6)},
                        has_target={"row": torch.ones(6, dtype=torch.bool)}, groups=np.arange(6), specs=store.specs)
    path = write_store(flipped, tmp_path / "f.h5", source="flipped", chunk=4)
    batch = next(iter(make_loader(H5SampleSet(path).dataset(np.arange(6), flip), 6)))
    assert torch.equal(batch["image"], images.flip(-1).float() / 255.0)


def test_convert_writes_the_file_and_training_reads_it(tmp_path, capsys):
    out = tmp_path / "digits.h5"
    assert main(["data", "convert", "--source", "digits", "--out", str(out), "--image-size", "16",
                 "--chunk", "100"]) == 0
    assert "wrote 1797 samples of digits" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert f["images"].chunks == (100, 1, 16, 16) and f.attrs["schema_version"] == 1
    store = build_source(DataConfig(source="hdf5", root=str(out), image_size=16))
    memory = build_source(DataConfig(source="digits", image_size=16))
    assert torch.equal(store.dataset(np.arange(3))[2]["image"], memory.dataset(np.arange(3))[2]["image"])


def test_convert_takes_the_data_section_of_a_run_config(tmp_path, capsys):
    """``--config`` converts the config's data section (here a combined source); flags override its keys."""
    config = tmp_path / "run.yaml"
    config.write_text("tasks: [digit, shape]\n"
                      "data:\n  source: combined\n  image_size: 32\n  parts:\n"
                      "    - {source: digits, num_samples: 30, tasks: [digit]}\n"
                      "    - {source: synthetic, num_samples: 20, tasks: [shape, colour]}\n")
    out = tmp_path / "combined.h5"
    assert main(["data", "convert", "--config", str(config), "--out", str(out), "--image-size", "16",
                 "--chunk", "8"]) == 0
    assert "wrote 50 samples of combined" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert f.attrs["source"] == "combined" and f["images"].shape == (50, 3, 16, 16) and f["images"].chunks[0] == 8
        assert set(f["targets"]) == {"digit", "shape", "colour"}
        assert f["has_target/digit"][()].tolist() == [True] * 30 + [False] * 20
    memory = build_source(DataConfig(source="combined", image_size=16, parts=[
        {"source": "digits", "num_samples": 30, "tasks": ["digit"]},
        {"source": "synthetic", "num_samples": 20, "tasks": ["shape", "colour"]}]))
    store = build_source(DataConfig(source="hdf5", root=str(out), image_size=16))
    on_disk, in_memory = store.dataset(np.arange(50)), memory.dataset(np.arange(50))
    for i in (0, 29, 30, 49):
        assert torch.equal(on_disk[i]["image"], in_memory[i]["image"])
        assert torch.equal(on_disk[i]["targets"]["shape"], in_memory[i]["targets"]["shape"])


def test_failed_convert_leaves_no_file(tmp_path, capsys):
    out = tmp_path / "pet.h5"
    assert main(["data", "convert", "--source", "oxford_pet", "--root", str(tmp_path / "missing"),
                 "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_no_partial_file(tmp_path, synthetic, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(h5py.File, "create_dataset", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        write_store(synthetic, tmp_path / "s.h5", source="synthetic")
    assert list(tmp_path.iterdir()) == []


def test_truncated_file(tmp_path, synthetic):
    path = write_store(synthetic, tmp_path / "s.h5", source="synthetic")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(DistmtlError, match=r"cannot read .*s.h5.*truncated, corrupt or not HDF5"):
        H5SampleSet(path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "s.h5"
    path.write_text("hello")
    with pytest.raises(DistmtlError, match="truncated, corrupt or not HDF5"):
        build_source(DataConfig(source="hdf5", root=str(path)))


def test_other_schema_version(tmp_path, synthetic):
    path = write_store(synthetic, tmp_path / "s.h5", source="synthetic")
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(DistmtlError, match="schema version 99, this distmtl reads version 1"):
        H5SampleSet(path)


def test_image_size_must_match_the_store(tmp_path, synthetic):
    path = write_store(synthetic, tmp_path / "s.h5", source="synthetic")
    with pytest.raises(DistmtlError, match="data.image_size is 32 but .* holds 16 px images"):
        build_source(DataConfig(source="hdf5", root=str(path), image_size=32))
