"""Loader throughput (images/s) of the same samples through every path distmtl offers, in one process:
in-memory tensors, the HDF5 store read a batch at a time (chunk size × compression × DataLoader
workers), the same store collated sample by sample (a plain DataLoader), in fully random order, and a
torchvision-style loader that decodes one PNG file per sample. Loaders are built as the engine builds
them (``make_loader``) and every batch is moved to ``--device``. The loaders take turns, one epoch each
per round, so machine noise hits them alike; each figure is the median over rounds, each ratio the
median of the per-round ratios (to in-memory tensors at 0 workers; workers' speed-ups to the same store
at 0 workers). At the default sizes the images outgrow the HDF5 chunk cache (the header prints both),
so every epoch decompresses its chunks again.

    python scripts/bench_data.py [--quick] [--device cpu|cuda] [--samples N] [--image-size 64]
                                 [--batch-size 64] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image
from tabulate import tabulate
from torch.utils.data import DataLoader, Dataset, RandomSampler

from distmtl.data.batch_loader import make_loader
from distmtl.data.hdf5_store import CHUNK_CACHE_BYTES, H5SampleSet, write_store
from distmtl.data.synthetic import generate
from distmtl.engine.loaders import to_device
from distmtl.machine import describe

RANDOM_BATCHES = 20  # the fully random row reads this many batches per round: a full epoch takes minutes


class PngFolder(Dataset):
    """One PNG per sample plus in-memory labels: what an ImageFolder-style loader does."""

    def __init__(self, files: list[Path], labels: torch.Tensor) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        with Image.open(self.files[i]) as image:
            pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
        return {"image": pixels.float().div_(255.0), "targets": {"fine": self.labels[i]}, "has_target": {}}


@dataclass
class Row:
    """One loader under test and its per-round images/s."""

    name: str
    setting: str
    workers: int
    loader: Iterable[dict]
    sampler: object
    max_batches: int | None = None
    rates: list[float] = field(default_factory=list)

    def epoch(self, index: int, device: torch.device) -> None:
        """Time one pass (or ``max_batches`` batches), each batch moved to ``device``."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(index)
        seen, started = 0, time.perf_counter()
        for step, batch in enumerate(self.loader):
            images, _, _ = to_device(batch, device)
            seen += len(images)
            if self.max_batches is not None and step + 1 == self.max_batches:
                break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.rates.append(seen / (time.perf_counter() - started))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8000 samples, 3 rounds (a few minutes on 2 cores)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--samples", type=int, default=None, help="default 16000 (8000 with --quick)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=None,
                        help="epochs per loader, taken in turns (default 5, 3 quick)")
    args = parser.parse_args(argv)
    if args.samples is None:
        args.samples = 8000 if args.quick else 16000
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    for flag in ("samples", "image_size", "batch_size", "rounds"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be > 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    return args


def build_rows(samples, tmp: Path, batch_size: int, pin: bool) -> list[Row]:
    """Every loader under test; files written here, outside any timed region."""
    indices = np.arange(len(samples))
    rows = []
    for workers in (0, 2):
        memory = samples.dataset(indices)
        sampler = samples.train_sampler(memory, 0, 1, 0)
        rows.append(Row("in-memory tensors", "shuffled", workers,
                        make_loader(memory, batch_size, sampler, workers, pin), sampler))
    for chunk in (16, 64, 256):
        for compression in ("none", "lzf", "gzip"):
            path = write_store(samples, tmp / f"c{chunk}-{compression}.h5", source="synthetic", chunk=chunk,
                               compression=compression)
            store = H5SampleSet(path)
            size = path.stat().st_size / 2**20
            setting = f"chunk {chunk}, {compression}, {size:.0f} MiB"
            for workers in (0, 1, 2) if chunk == 64 else (0,):
                dataset = store.dataset(indices)
                sampler = store.train_sampler(dataset, 0, 1, 0)
                rows.append(Row("HDF5 chunk-shuffled, batch reads", setting, workers,
                                make_loader(dataset, batch_size, sampler, workers, pin), sampler))
            for workers in (0, 2) if chunk == 64 and compression == "lzf" else ():
                dataset = store.dataset(indices)
                sampler = store.train_sampler(dataset, 0, 1, 0)
                rows.append(Row("HDF5 chunk-shuffled, per-sample collation", setting, workers,
                                DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                           pin_memory=pin, persistent_workers=workers > 0), sampler))
    store = H5SampleSet(tmp / "c64-gzip.h5")
    dataset = store.dataset(indices)
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(0))
    rows.append(Row("HDF5 fully random order", f"chunk 64, gzip, {RANDOM_BATCHES} batches a round", 0,
                    make_loader(dataset, batch_size, sampler, 0, pin), sampler, RANDOM_BATCHES))
    files = []
    for i in range(len(samples)):
        files.append(tmp / f"{i:06d}.png")
        Image.fromarray(samples.images[i].permute(1, 2, 0).numpy()).save(files[-1])
    pngs = PngFolder(files, samples.targets["fine"])
    for workers in (0, 2):
        rows.append(Row("per-file PNG (torchvision-style)", "one file per sample", workers,
                        DataLoader(pngs, batch_size=batch_size, shuffle=True, num_workers=workers, pin_memory=pin,
                                   persistent_workers=workers > 0), None))
    return rows


def measure(rows: list[Row], rounds: int, device: torch.device) -> None:
    """Start every loader's workers and open its files, then time one epoch of each loader per round, in turns."""
    for row in rows:
        next(iter(row.loader))
    for index in range(rounds):
        for row in rows:
            row.epoch(index, device)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    samples = generate(args.samples, args.image_size, seed=0).select_tasks(["fine", "shape"])
    image_mib = samples.images.numel() / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        rows = build_rows(samples, Path(tmp), args.batch_size, device.type == "cuda")
        measure(rows, args.rounds, device)
        results = [(row.name, row.setting, row.workers, row.rates) for row in rows]
        del rows  # stops the persistent workers before their files go

    base = results[0][3]
    ratio = [statistics.median(r / b for r, b in zip(rates, base)) for *_, rates in results]
    print(f"machine: {describe(device)}; h5py {h5py.__version__}, HDF5 {h5py.version.hdf5_version}")
    print(f"{args.samples} images of {args.image_size}×{args.image_size} "
          f"({image_mib:.0f} MiB as uint8; HDF5 chunk cache "
          f"{CHUNK_CACHE_BYTES // 2**20} MiB per dataset), batch {args.batch_size}, {args.rounds} rounds; "
          "files in the OS page cache")
    table = [[name, setting, str(workers), f"{statistics.median(rates):,.0f}", f"{r:.2f}×"]
             for (name, setting, workers, rates), r in zip(results, ratio)]
    print(tabulate(table, ["loader", "setting", "DataLoader workers", "images/s (median)",
                           "vs in-memory, 0 workers (median)"], tablefmt="github", disable_numparse=True))

    hdf5 = [(setting, workers, r) for (name, setting, workers, _), r in zip(results, ratio)
            if name.endswith("batch reads")]
    per_sample = [r for (name, *_), r in zip(results, ratio) if name.endswith("per-sample collation")]
    at_64 = {(setting.split(", ")[1], workers): r for setting, workers, r in hdf5 if setting.startswith("chunk 64,")}
    rates_64 = {(setting.split(", ")[1], workers): rates for name, setting, workers, rates in results
                if name.endswith("batch reads") and setting.startswith("chunk 64,")}
    speedup = lambda c: statistics.median(a / b for a, b in zip(rates_64[c, 2], rates_64[c, 0]))  # noqa: E731
    kinds = ("none", "lzf", "gzip")
    headline = {
        "hdf5_vs_memory": round(max(r for _, workers, r in hdf5 if workers == 0), 3),
        "hdf5_vs_memory_chunk64": {c: round(at_64[c, 0], 3) for c in kinds},
        "hdf5_best_with_workers_vs_memory": round(max(r for _, workers, r in hdf5 if workers > 0), 3),
        "workers2_speedup_chunk64": {c: round(speedup(c), 3) for c in kinds},
        "per_sample_vs_memory_chunk64_lzf": {"0_workers": round(per_sample[0], 3),
                                             "2_workers": round(per_sample[1], 3)},
        "fully_random_vs_memory": round(ratio[-3], 3),
        "png_vs_memory": round(ratio[-2], 3),
    }
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
