"""Checkpoint files: model, optimizer, weighting state, epoch, best-so-far and RNG state in one file."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distmtl.errors import DistmtlError

CHECKPOINT_FILE = "checkpoint.pt"
ARTIFACTS_DIR = "artifacts"
FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy and torch random states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus the format version) to ``directory/checkpoint.pt``."""
    path = Path(directory) / CHECKPOINT_FILE
    torch.save({"format_version": FORMAT_VERSION, **payload}, path)
    return path


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise DistmtlError(f"no checkpoint at {path} (expected a directory holding {CHECKPOINT_FILE})")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format_version") != FORMAT_VERSION:
        raise DistmtlError(
            f"checkpoint {path} has format version {payload.get('format_version')}, this distmtl reads {FORMAT_VERSION}"
        )
    return payload


def save_artifacts(artifacts: dict, directory: Path, epoch: int) -> None:
    """Save each artifact as ``directory/<name>_epoch<NNN>.png`` (a matplotlib figure, then closed) or
    ``.json`` (a dict)."""
    if not artifacts:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in artifacts.items():
        stem = directory / f"{name}_epoch{epoch:03d}"
        if isinstance(value, dict):
            stem.with_suffix(".json").write_text(json.dumps(value, indent=1))
        else:
            import matplotlib.pyplot as plt

            value.savefig(stem.with_suffix(".png"), dpi=90)
            plt.close(value)
