"""How the engine hands out per-epoch metrics and checkpoints, and finds a checkpoint to resume from.

Ray Train's reporter lives in :mod:`distmtl.launch`; :class:`LocalReporter` serves plain
processes and tests.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from distmtl.engine.checkpoint import TrainingState


class Reporter(Protocol):
    """Receives one report per epoch from every rank (a barrier under Ray Train)."""

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        """Publish ``metrics``; ``checkpoint_dir`` (rank 0 only) holds this epoch's checkpoint to persist."""

    def restore_dir(self) -> contextlib.AbstractContextManager[str | None]:
        """A directory holding the checkpoint to resume from, or ``None`` to start fresh."""

    def resumed(self, metrics: dict[str, float]) -> None:
        """Called on every rank before training continues from a checkpoint, with that checkpoint's report."""


class LocalReporter:
    """Keeps every report in ``history`` and copies checkpoints to ``output_dir/checkpoint_XXXXXX`` when
    given one; ``best_state`` reads the best-epoch weights from the latest copied checkpoint."""

    def __init__(self, output_dir: str | Path | None = None, resume_from: str | Path | None = None) -> None:
        self.output_dir = Path(output_dir) if output_dir else None
        self.resume_from = str(resume_from) if resume_from else None
        self.history: list[dict[str, float]] = []
        self.checkpoints: list[Path] = []

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        self.history.append(dict(metrics))
        if checkpoint_dir and self.output_dir:
            target = self.output_dir / f"checkpoint_{len(self.history) - 1:06d}"
            partial = target.with_name(target.name + ".partial")  # copied whole, then renamed: never half a checkpoint
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(checkpoint_dir, partial)
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
            self.checkpoints.append(target)

    @property
    def best_state(self) -> dict | None:
        """The best epoch's weights as of the latest checkpoint (needs ``output_dir``)."""
        if not self.checkpoints:
            return None
        return TrainingState.load(self.checkpoints[-1]).best.state

    @contextlib.contextmanager
    def restore_dir(self) -> Iterator[str | None]:
        yield self.resume_from

    def resumed(self, metrics: dict[str, float]) -> None:
        """A local run's reports are all in ``history``: nothing was missed."""
