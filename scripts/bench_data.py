"""Loader throughput (images/s) of the same samples through every path distmtl offers, in one process
so the ratios hold: in-memory tensors, the HDF5 store (chunk sizes × compression × DataLoader
workers) and a torchvision-style loader that decodes one PNG file per sample.

    python scripts/bench_data.py [--samples 4000] [--image-size 64] [--batch-size 64] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from distmtl.data.hdf5_store import H5SampleSet, write_store
from distmtl.data.synthetic import generate


class PngFolder(Dataset):
    """One PNG per sample plus an in-memory label list: what an ImageFolder-style loader does."""

    def __init__(self, files: list[Path], labels: torch.Tensor) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        with Image.open(self.files[i]) as image:
            pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
        return {"image": pixels.float().div_(255.0), "targets": {"fine": self.labels[i]}}


def throughput(dataset: Dataset, sampler, batch_size: int, workers: int, epochs: int) -> float:
    """Images per second over ``epochs`` full passes (after one warm-up batch)."""
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0)
    next(iter(loader))
    seen, started = 0, time.perf_counter()
    for epoch in range(epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for batch in loader:
            seen += len(batch["image"])
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    samples = generate(args.samples, args.image_size, seed=0).select_tasks(["fine", "shape"])
    indices = np.arange(len(samples))
    rows: list[tuple[str, str, int, float]] = []
    run = lambda name, detail, dataset, sampler, workers: rows.append(  # noqa: E731
        (name, detail, workers, throughput(dataset, sampler, args.batch_size, workers, args.epochs)))

    with tempfile.TemporaryDirectory() as tmp:
        for workers in (0, 2):
            memory = samples.dataset(indices)
            run("in-memory tensors", "shuffled", memory, torch.utils.data.RandomSampler(memory), workers)
        for chunk in (16, 64, 256):
            for compression in ("none", "lzf", "gzip"):
                path = write_store(samples, Path(tmp) / f"c{chunk}-{compression}.h5", source="synthetic",
                                   chunk=chunk, compression=compression)
                store = H5SampleSet(path)
                size = path.stat().st_size / 2**20
                for workers in (0, 2):
                    dataset = store.dataset(indices)
                    run("HDF5 chunk-shuffled", f"chunk {chunk}, {compression}, {size:.0f} MiB", dataset,
                        store.train_sampler(dataset, 0, 1, 0), workers)
        path = write_store(samples, Path(tmp) / "naive.h5", source="synthetic", chunk=64, compression="gzip")
        store = H5SampleSet(path)
        dataset = store.dataset(indices)
        run("HDF5 fully random", "chunk 64, gzip (no chunk-aware order)", dataset,
            torch.utils.data.RandomSampler(dataset), 0)
        files = []
        for i in range(len(samples)):
            files.append(Path(tmp) / f"{i:06d}.png")
            Image.fromarray(samples.images[i].permute(1, 2, 0).numpy()).save(files[-1])
        pngs = PngFolder(files, samples.targets["fine"])
        for workers in (0, 2):
            run("per-file PNG (torchvision-style)", "one file per sample", pngs, torch.utils.data.RandomSampler(pngs), workers)

    base = rows[0][3]
    print(f"{args.samples} images of {args.image_size}×{args.image_size}, batch {args.batch_size}, "
          f"{args.epochs} epochs, {torch.get_num_threads()} torch threads")
    print(f"| loader | setting | DataLoader workers | images/s | vs in-memory (0 workers) |")
    print("|---|---|---|---|---|")
    for name, detail, workers, rate in rows:
        print(f"| {name} | {detail} | {workers} | {rate:,.0f} | {rate / base:.2f}× |")


if __name__ == "__main__":
    main()
