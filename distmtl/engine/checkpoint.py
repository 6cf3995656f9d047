"""The checkpoint format: a typed :class:`TrainingState`, written atomically and read back safely.

A checkpoint holds exactly what resuming needs — epoch, model, optimizer, weighting, the model's
structure (e.g. Selective Sharing's branch map) and its structure controller's state, the best
epoch so far with its weights, every rank's RNG states, the sampler position, the global step — plus the config
and the epoch's metrics. It is stored as plain tensors, numbers, strings, lists and dicts, so it
loads with ``torch.load(weights_only=True)``: reading a checkpoint never runs pickled code.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distmtl.errors import DistmtlError

CHECKPOINT_FILE = "checkpoint.pt"
ARTIFACTS_DIR = "artifacts"
FORMAT_VERSION = 3  # 3: optimizer groups carry base_lr for the learning-rate schedule


@dataclass
class Best:
    """The best epoch so far on the validation selection metric, and a CPU copy of its weights and structure."""

    epoch: int = -1
    score: float = math.nan
    state: dict[str, torch.Tensor] | None = None
    structure: dict | None = None

    def improves(self, score: float, mode: str) -> bool:
        """Whether ``score`` beats this best in direction ``mode`` (``min``/``max``); NaN never does."""
        if math.isnan(score):
            return False
        if self.epoch < 0 or math.isnan(self.score):
            return True
        return score < self.score if mode == "min" else score > self.score


@dataclass
class TrainingState:
    """Everything a checkpoint holds after ``epoch`` (the last completed epoch) finished."""

    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    weighting: dict[str, torch.Tensor]
    best: Best
    rng: list[dict[str, Any]]  # one per rank, in rank order
    config: dict[str, Any]
    structure: dict[str, Any] = field(default_factory=dict)
    controller: dict[str, Any] = field(default_factory=dict)
    affinity: dict[str, Any] = field(default_factory=dict)  # the task-affinity probe's run totals, when it measures
    sampler: dict[str, int] = field(default_factory=dict)
    global_step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    image_shape: list[int] = field(default_factory=list)  # C, H, W of the run's images (rebuilds the model alone)
    format_version: int = FORMAT_VERSION

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/checkpoint.pt`` atomically (a temporary file in the same directory, then a rename)."""
        path = Path(directory) / CHECKPOINT_FILE
        partial = path.with_name(path.name + ".partial")
        torch.save(asdict(self), partial)
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TrainingState:
        """Read a checkpoint onto the CPU; a missing, corrupt or other-version file raises :class:`DistmtlError`."""
        path = Path(directory) / CHECKPOINT_FILE
        if not path.is_file():
            raise DistmtlError(f"no checkpoint at {path} (expected a directory holding {CHECKPOINT_FILE})")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises pickle, zip and runtime errors alike for damaged files
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DistmtlError(f"cannot read {path} ({reason}): the file is damaged") from None
        version = payload.get("format_version") if isinstance(payload, dict) else None
        if version != FORMAT_VERSION:
            raise DistmtlError(f"checkpoint {path} has format version {version}, this distmtl reads {FORMAT_VERSION}")
        payload["best"] = Best(**payload["best"])
        return cls(**payload)


def load_checkpoint(directory: str | Path) -> TrainingState:
    """The :class:`TrainingState` saved in ``directory``."""
    return TrainingState.load(directory)


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy and torch random states, as plain lists and tensors."""
    version, internal, gauss = random.getstate()
    numpy = np.random.get_state(legacy=False)
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {"key": torch.from_numpy(numpy["state"]["key"].astype(np.int64)), "pos": int(numpy["state"]["pos"]),
                  "has_gauss": int(numpy["has_gauss"]), "gauss": float(numpy["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
                         "has_gauss": numpy["has_gauss"], "gauss": numpy["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
