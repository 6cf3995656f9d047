"""Fault injection for tests and drills: make one rank's process die at a chosen point, once.

``DISTMTL_INJECT_FAULT="rank=R,epoch=E,batch=B,once=PATH"`` (read by the launcher on the driver and
handed to every worker) makes rank R exit abruptly — as a preempted or OOM-killed worker would,
without cleanup — when it reaches batch B of epoch E, unless the file ``once`` already exists; the
file is created first, so the restarted worker group runs past that point.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from distmtl.errors import DistmtlError

ENV_VAR = "DISTMTL_INJECT_FAULT"
EXIT_STATUS = 137  # what a SIGKILLed process reports


@dataclass(frozen=True)
class InjectedFault:
    """Where the fault fires: rank, epoch and training batch, and the marker file that makes it fire once."""

    rank: int
    epoch: int
    batch: int
    once: Path

    @classmethod
    def parse(cls, spec: str) -> InjectedFault:
        """``rank=R,epoch=E[,batch=B],once=PATH`` → an :class:`InjectedFault` (batch defaults to 0)."""
        try:
            fields = dict(item.split("=", 1) for item in spec.split(","))
            return cls(int(fields["rank"]), int(fields["epoch"]), int(fields.get("batch", 0)), Path(fields["once"]))
        except (KeyError, ValueError):
            raise DistmtlError(f"{ENV_VAR}={spec!r}: expected 'rank=R,epoch=E[,batch=B],once=PATH'") from None

    def maybe_fire(self, rank: int, epoch: int, batch: int) -> None:
        """Exit this process at once if this is the chosen point and the fault has not fired yet."""
        if (rank, epoch, batch) != (self.rank, self.epoch, self.batch) or self.once.exists():
            return
        self.once.touch()
        os._exit(EXIT_STATUS)


def fault_from_environment() -> str | None:
    """The fault spec the user set for this launch, if any (validated here, on the driver)."""
    spec = os.environ.get(ENV_VAR)
    if spec:
        InjectedFault.parse(spec)
    return spec or None
