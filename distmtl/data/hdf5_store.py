"""The chunked HDF5 store: one file per data set, written by ``distmtl data convert``, streamed in training.

Layout (schema version ``SCHEMA_VERSION``)::

    /images               uint8  N×C×H×W, chunked along N
    /targets/<task>       one dataset per task target, chunked like the images
    /has_target/<task>    bool   N
    /groups               int64  N   original-image id of each sample
    /test_mask            bool   N   optional: the source's own test split
    attrs: schema_version, source, distmtl_version, tasks (JSON: kind, size, description), class_names (JSON)
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate

import distmtl
from distmtl.config.schema import DataConfig
from distmtl.data.chunk_sampler import ChunkShuffleSampler
from distmtl.data.sample_set import SampleSet, TargetSpec, make_item
from distmtl.data.sources import register_source, require_root
from distmtl.errors import DistmtlError

SCHEMA_VERSION = 1
COMPRESSIONS = ("gzip", "lzf", "none")
CHUNK_CACHE_BYTES = 64 * 2**20
_MAX_GAP = 8  # rows further apart than this start a new slice read


def write_store(samples: SampleSet, path: str | Path, *, source: str, chunk: int = 64,
                compression: str = "gzip") -> Path:
    """Write ``samples`` to ``path`` atomically: into ``path.partial`` first, renamed only on success."""
    path = Path(path)
    if compression not in COMPRESSIONS:
        raise DistmtlError(f"--compression must be one of {', '.join(COMPRESSIONS)} (got '{compression}')")
    if chunk <= 0:
        raise DistmtlError(f"--chunk must be > 0 (got {chunk})")
    if not path.parent.is_dir():
        raise DistmtlError(f"output directory {path.parent} does not exist")
    partial = path.with_name(path.name + ".partial")
    n = len(samples)
    codec = None if compression == "none" else compression
    try:
        with h5py.File(partial, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["source"] = source
            f.attrs["distmtl_version"] = distmtl.__version__
            f.attrs["tasks"] = json.dumps({t: vars(s) for t, s in samples.specs.items()})
            f.attrs["class_names"] = json.dumps(samples.class_names)
            rows = min(chunk, n)
            f.create_dataset("images", data=samples.images.numpy(), chunks=(rows, *samples.image_shape),
                             compression=codec)
            for task, value in samples.targets.items():
                array = value.numpy()
                f.create_dataset(f"targets/{task}", data=array, chunks=(rows, *array.shape[1:]), compression=codec)
                f.create_dataset(f"has_target/{task}", data=samples.has_target[task].numpy())
            f.create_dataset("groups", data=np.asarray(samples.groups, dtype=np.int64))
            if samples.test_mask is not None:
                f.create_dataset("test_mask", data=samples.test_mask)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _open(path: str | Path) -> h5py.File:
    """Open a store read-only with a chunk cache large enough to keep a few chunks decompressed."""
    path = Path(path)
    if not path.is_file():
        raise DistmtlError(f"HDF5 file not found: {path} (write one with `distmtl data convert`)")
    try:
        return h5py.File(path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
    except OSError as exc:
        raise DistmtlError(f"cannot read {path} as HDF5 ({str(exc).split('(')[0].strip()}): the file is truncated, "
                           "corrupt or not HDF5; convert it again") from None


def read_specs(path: str | Path) -> dict[str, TargetSpec]:
    """The targets a store holds, after checking its schema version."""
    with _open(path) as f:
        _check_schema(f, path)
        return {t: TargetSpec(**s) for t, s in json.loads(f.attrs["tasks"]).items()}


def _check_schema(f: h5py.File, path: str | Path) -> None:
    version = f.attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DistmtlError(f"{path} has schema version {version}, this distmtl reads version {SCHEMA_VERSION}: "
                           "convert the source again with this version")
    missing = [name for name in ("images", "targets", "has_target", "groups") if name not in f]
    if missing:
        raise DistmtlError(f"{path} lacks {missing}: not a distmtl store; convert the source again")


class H5SampleSet:
    """A store's metadata in memory; images and targets stay on disk and are read per batch."""

    def __init__(self, path: str | Path, tasks: list[str] | None = None) -> None:
        self.path = str(Path(path).resolve())
        with _open(path) as f:
            _check_schema(f, path)
            all_specs = {t: TargetSpec(**s) for t, s in json.loads(f.attrs["tasks"]).items()}
            self.tasks = list(tasks or all_specs)
            self.specs = {t: all_specs[t] for t in self.tasks}
            self.class_names = {t: v for t, v in json.loads(f.attrs["class_names"]).items() if t in self.tasks}
            try:
                self.has_target = {t: torch.from_numpy(f[f"has_target/{t}"][()]) for t in self.tasks}
                self.groups = f["groups"][()]
                self.test_mask = f["test_mask"][()] if "test_mask" in f else None
                self._shape = tuple(f["images"].shape[1:])
                self.chunk = f["images"].chunks[0]
            except (OSError, KeyError) as exc:
                raise DistmtlError(f"cannot read {path}: {exc}; "
                                   "the file is truncated or corrupt, convert it again") from None

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    def select_tasks(self, tasks: list[str]) -> H5SampleSet:
        selected = copy.copy(self)
        selected.tasks = list(tasks)
        selected.specs = {t: self.specs[t] for t in tasks}
        selected.has_target = {t: self.has_target[t] for t in tasks}
        selected.class_names = {t: v for t, v in self.class_names.items() if t in tasks}
        return selected

    def dataset(self, indices: np.ndarray, augment=None) -> Dataset:
        return H5Dataset(self, indices, augment)

    def train_sampler(self, dataset: Dataset, rank: int, world_size: int, seed: int) -> Sampler:
        return ChunkShuffleSampler(dataset.indices, self.chunk, rank, world_size, seed)  # type: ignore[attr-defined]


class H5Dataset(Dataset):
    """Rows ``indices`` of a store. Each process (DataLoader worker) opens its own file handle.
    ``read_batch`` reads many positions as one batch (what :func:`distmtl.data.batch_loader.make_loader`
    uses); ``__getitems__`` gives the same samples one dict each, for plain DataLoaders."""

    def __init__(self, samples: H5SampleSet, indices: np.ndarray, augment=None) -> None:
        self.path, self.tasks = samples.path, samples.tasks
        self.has_target = {t: m.numpy() for t, m in samples.has_target.items()}
        self.indices = np.asarray(indices, dtype=np.int64)
        self.augment = augment
        self._open: dict[str, h5py.Dataset] = {}
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": {}, "_pid": None}

    def _datasets(self) -> dict[str, h5py.Dataset]:
        """This process's open images and target datasets, opened once: each keeps its chunk cache, so
        a chunk that several batches draw from is read and decompressed once."""
        if self._pid != os.getpid():
            f = _open(self.path)
            self._open = {name: f[name] for name in ("images", *(f"targets/{t}" for t in self.tasks))}
            self._pid = os.getpid()
        return self._open

    def _read(self, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """File rows, uint8 images and targets of ``positions``, in that order, with one slice read per
        run of nearby rows per dataset."""
        f = self._datasets()
        rows = self.indices[np.asarray(positions, dtype=np.int64)]
        unique, inverse = np.unique(rows, return_inverse=True)
        read = lambda name: _read_rows(f[name], unique)[inverse]  # noqa: E731
        return rows, read("images"), {t: read(f"targets/{t}") for t in self.tasks}

    def read_batch(self, positions: Sequence[int]) -> dict:
        """``positions`` as one batch (see :class:`distmtl.data.batch_loader.BatchReadable`): numpy arrays with
        uint8 images, or, with augmentation, the default collation of the augmented samples."""
        if self.augment is not None:
            return default_collate(self.__getitems__(positions))
        rows, images, targets = self._read(positions)
        return {"image": images, "targets": targets, "has_target": {t: self.has_target[t][rows] for t in self.tasks}}

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: Sequence[int]) -> list[dict]:
        rows, images, targets = self._read(positions)
        images, targets = torch.from_numpy(images), {t: torch.from_numpy(v) for t, v in targets.items()}
        masks = {t: torch.from_numpy(self.has_target[t][rows]) for t in self.tasks}
        return [make_item(images[k], {t: v[k] for t, v in targets.items()}, {t: m[k] for t, m in masks.items()},
                          self.augment) for k in range(len(rows))]


def _read_rows(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """``dataset[rows]`` for sorted unique ``rows``, read as one slice per run of nearby rows and picked in
    memory: the chunk-aware order puts a batch in a few such runs, and slices are far faster than
    HDF5's point selection."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(rows) > _MAX_GAP) + 1, [len(rows)]])
    parts = []
    for begin, end in zip(starts[:-1], starts[1:]):
        run = rows[begin:end]
        parts.append(dataset[int(run[0]) : int(run[-1]) + 1][run - run[0]])
    return np.concatenate(parts)


def _store_path(cfg: DataConfig) -> Path:
    return require_root(cfg, "an HDF5 file written by `distmtl data convert`")


def _store_specs(cfg: DataConfig) -> dict[str, TargetSpec]:
    return read_specs(_store_path(cfg))


@register_source("hdf5", _store_specs)
def hdf5_source(cfg: DataConfig) -> H5SampleSet:
    """Stream a store; its image size must match ``data.image_size`` (stores are written at one size)."""
    samples = H5SampleSet(_store_path(cfg))
    if samples.image_shape[1] != cfg.image_size:
        raise DistmtlError(f"data.image_size is {cfg.image_size} but {cfg.root} holds {samples.image_shape[1]} px "
                           f"images: set data.image_size: {samples.image_shape[1]} or convert again at that size")
    return samples
