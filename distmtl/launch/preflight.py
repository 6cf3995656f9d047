"""Checks of a run's inputs that the driver makes before Ray starts (the config itself is checked on loading)."""

from __future__ import annotations

from pathlib import Path

from distmtl.engine.checkpoint import CHECKPOINT_FILE, load_checkpoint
from distmtl.errors import DistmtlError


def check_resume(directory: str | Path) -> None:
    """Raise :class:`DistmtlError` unless ``directory`` holds a checkpoint this distmtl can read, so that a
    damaged file fails in a second rather than in every worker after Ray has started."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise DistmtlError(f"--resume: no {CHECKPOINT_FILE} in {directory} (give a checkpoint_* directory of a run)")
    try:
        load_checkpoint(directory)
    except DistmtlError as exc:
        raise DistmtlError(f"--resume: {exc}; resume from another checkpoint_* directory") from None
