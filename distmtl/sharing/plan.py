"""Turn cluster labels into a merge plan over the current branches.

Merging is monotone: branches merge, never split. Every branch that holds a task of a cluster
joins that cluster's merge; all tasks on the merged branches move to the surviving branch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Merge rules that keep one member branch as it is, and how they pick it from the members' aggregated losses (each
#: task's loss relative to its first epoch's): the branch whose tasks' losses fell most, or least.
KEPT_BY_LOSS = {"lowest_loss": min, "highest_loss": max}

@dataclass
class Merge:
    """Branches ``members`` become one: ``survivor`` keeps its name; ``rule`` says how weights combine."""

    survivor: str
    members: list[str]
    rule: str


@dataclass
class MergePlan:
    """What rank 0 decided this epoch (broadcast to every rank as is)."""

    labels: dict[str, int]
    merges: list[Merge] = field(default_factory=list)
    similarity: list[list[float]] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.merges)


def plan_merges(
    labels: dict[str, int], branch_of: dict[str, str], task_losses: dict[str, float], rule: str
) -> list[Merge]:
    """One :class:`Merge` per cluster whose tasks sit on two or more branches.

    The survivor is the member branch with the lowest aggregated loss (mean of its tasks' entries in
    ``task_losses``) under ``lowest_loss``, the highest under ``highest_loss``, else the member with the smallest
    name (weights are then combined). Losses of different task kinds (cross-entropy, MSE) are not on one scale, so the
    controller passes each task's epoch loss relative to its first epoch's.
    """
    branch_loss = {
        b: sum(task_losses[t] for t in tasks) / len(tasks)
        for b, tasks in tasks_by_branch(branch_of).items()
    }
    merges, taken = [], set()
    for cluster in sorted({c for c in labels.values() if c >= 0}):
        members = sorted({branch_of[t] for t, c in labels.items() if c == cluster} - taken)
        if len(members) < 2:
            continue
        taken.update(members)
        pick = KEPT_BY_LOSS.get(rule)
        survivor = pick(members, key=lambda b: (branch_loss[b], b)) if pick else members[0]
        merges.append(Merge(survivor, members, rule))
    return merges


def apply_to_map(branch_of: dict[str, str], merges: list[Merge]) -> dict[str, str]:
    """The branch map after ``merges``."""
    moved = {m: merge.survivor for merge in merges for m in merge.members}
    return {t: moved.get(b, b) for t, b in branch_of.items()}


def every_task_grouped(branch_of: dict[str, str]) -> bool:
    """The stop criterion: no task is alone on its branch."""
    return all(len(tasks) >= 2 for tasks in tasks_by_branch(branch_of).values())


def tasks_by_branch(branch_of: dict[str, str]) -> dict[str, list[str]]:
    """The tasks on each branch, in task order."""
    grouped: dict[str, list[str]] = {}
    for task, branch in branch_of.items():
        grouped.setdefault(branch, []).append(task)
    return grouped
