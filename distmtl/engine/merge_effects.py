"""What each Selective Sharing merge did to the tasks it merged: their training losses just before and just after.

A task's loss after a merge against before, divided by its first epoch's loss, is the share of what it had learned
that the merge undid (:func:`progress_lost`: 0 nothing, 1 back to where it started); a ratio of the losses would
explode for a task solved before the merge (loss ≈ 0).

Every training step's per-task batch losses go into a ring of the last ``steps`` steps (detached, on the device: no
host sync per step). When a merge happens, the ring's mean is the "before" of every task on the merged branches; the
first ``steps`` steps after the merge make its "after"; the record is closed at the end of the epoch after the merge
(with as many after-steps as that epoch ran, at most ``steps``). Means are taken per rank and averaged over ranks
(one all-reduce of K numbers at a closing), identically on every rank.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

from distmtl.engine.context import DistContext
from distmtl.sharing.plan import Merge


class MergeEffects:
    """The before/after training losses of every merge of a run, as records (``records``)."""

    def __init__(self, tasks: list[str], steps: int) -> None:
        self.tasks, self.steps = list(tasks), steps
        self._recent: deque[torch.Tensor] = deque(maxlen=steps)
        self._after: list[torch.Tensor] = []
        self._open: list[dict[str, Any]] = []  # merges whose after-steps are being collected
        self.records: list[dict[str, Any]] = []

    def track(self, losses: dict[str, torch.Tensor]) -> None:
        """One training step's per-task losses."""
        row = torch.stack([losses[t].detach().float() for t in self.tasks])
        self._recent.append(row)
        if self._open and len(self._after) < self.steps:
            self._after.append(row)

    def merged(self, ctx: DistContext, merges: list[Merge], branch_of: dict[str, str], epoch: int,
               first: dict[str, float]) -> None:
        """Open a record per merge (called on every rank alike, with the branch map before the merge and each task's
        first-epoch loss, the scale of what it has learned)."""
        if not merges:
            return
        before, steps = self._mean(ctx, list(self._recent)), len(self._recent)
        for merge in merges:
            tasks = [t for t in self.tasks if branch_of[t] in merge.members]
            self._open.append({"epoch": epoch, "rule": merge.rule, "survivor": merge.survivor,
                               "kept_from": [t for t in tasks if branch_of[t] == merge.survivor],
                               "tasks": tasks, "first": {t: first[t] for t in tasks},
                               "before": {t: before[self.tasks.index(t)] for t in tasks}, "before_steps": steps})
        self._after = []

    def close(self, ctx: DistContext) -> None:
        """At an epoch's end: finish the records opened before it (their after-steps are in)."""
        if not self._open or not self._after:
            return
        after = self._mean(ctx, self._after)
        for record in self._open:
            record["after"] = {t: after[self.tasks.index(t)] for t in record["tasks"]}
            record["after_steps"] = len(self._after)
            self.records.append(record)
        self._open, self._after = [], []

    def _mean(self, ctx: DistContext, rows: list[torch.Tensor]) -> list[float]:
        """The mean of ``rows`` (this rank's), averaged over the ranks."""
        mean = torch.stack(rows).double().mean(0) if rows else torch.full((len(self.tasks),), float("nan"))
        return (ctx.all_reduce_sum(mean) / ctx.world_size).tolist()

    def state_dict(self) -> list[dict[str, Any]]:
        return list(self.records)

    def load_state_dict(self, records: list[dict[str, Any]]) -> None:
        self.records = list(records)


def progress_lost(record: dict[str, Any], task: str) -> float:
    """(loss after − loss before) / first-epoch loss of ``task`` in a merge ``record``."""
    return (record["after"][task] - record["before"][task]) / record["first"][task]
