"""What a trial tells Tune: rank 0's per-epoch reports, with ASHA's clock and a worst-case score on failure.

A trial restarted by ``distmtl tune --resume`` continues its Train run from a checkpoint, so Tune's
own ``training_iteration`` starts again at 1; ``epochs_done`` keeps counting epochs and is ASHA's
clock. A trial whose training failed (its loss diverged) reports the worst value of the sweep's
metrics, so that Optuna and ASHA rank it last instead of never hearing of it.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from distmtl.errors import FAILURE_KEY

#: The metric ASHA schedules on: epochs the trial's Train run has completed.
EPOCHS_DONE = "epochs_done"


def for_tune(metrics: dict[str, Any], objectives: list[tuple[str, str]]) -> dict[str, Any]:
    """A Train report as Tune should see it: ``epochs_done`` added and, on a failure report, every objective
    (metric, mode) set to its worst value (+inf when minimised, -inf when maximised)."""
    out = {**metrics, EPOCHS_DONE: int(metrics["epoch"]) + 1}
    if FAILURE_KEY in metrics:
        out.update({metric: math.inf if mode == "min" else -math.inf for metric, mode in objectives})
    return out


class TrialReport(TuneReportCallback):
    """Forwards rank 0's reports to the Tune trial through :func:`for_tune`."""

    def __init__(self, objectives: list[tuple[str, str]]) -> None:
        super().__init__()
        self.objectives = objectives

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        super().after_report(run_context, [for_tune(metrics[0], self.objectives)], checkpoint)
