"""Where a worker's start-up time goes: the phases from building the Trainer to its first optimizer step.

The durations are reported once, with the first epoch this process trains (``startup/<phase>_s``), so a slow
start shows in MLflow and in ``scripts/bench_ray.py`` without a profiler.
"""

from __future__ import annotations

import time


class StartupClock:
    """Measures consecutive phases: each :meth:`mark` closes the phase that began at the previous mark."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self._phases: dict[str, float] = {}
        self._reported = False

    def mark(self, phase: str) -> None:
        """End ``phase`` now (the first mark of a name wins: later ones are ignored)."""
        now = time.perf_counter()
        self._phases.setdefault(phase, now - self._last)
        self._last = now

    def metrics(self) -> dict[str, float]:
        """The phases as ``startup/<phase>_s`` metrics, once: later calls return nothing."""
        if self._reported:
            return {}
        self._reported = True
        return {f"startup/{phase}_s": seconds for phase, seconds in self._phases.items()}
