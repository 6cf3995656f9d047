"""What a trial tells Tune: rank 0's per-epoch reports, with ASHA's clock, what the driver needs to know of the
trial, and a worst-case score on failure.

A trial restarted by ``distmtl tune --resume`` continues its Train run from a checkpoint, so Tune's
own ``training_iteration`` starts again at 1; ``epochs_done`` keeps counting epochs and is ASHA's
clock. Every report carries the epochs the trial's config plans, and a Train run's first report (and a
failure or cross-validation report) its resolved config: the driver shows, tags and logs the trial from its
reports and never rebuilds its config. A trial whose training failed (its loss diverged) reports the worst
value of the sweep's metrics, so that Optuna and ASHA rank it last instead of never hearing of it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from distmtl.config.schema import Config
from distmtl.errors import FAILURE_KEY

#: The metric ASHA schedules on: epochs the trial's Train run has completed.
EPOCHS_DONE = "epochs_done"
#: In every report: the epochs the trial's config asks for.
EPOCHS_PLANNED = "epochs_planned"
#: In a Train run's first report: the trial's resolved config as JSON (what its MLflow run's params hold).
SETTINGS = "settings"


def trial_facts(config: Config) -> dict[str, Any]:
    """What the driver learns of a trial from its reports: its planned epochs and its resolved config."""
    return {EPOCHS_PLANNED: config.optim.epochs, SETTINGS: json.dumps(config.model_dump(mode="json"))}


def for_tune(metrics: dict[str, Any], objectives: list[tuple[str, str]], facts: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """A Train report as Tune should see it: ``epochs_done`` and the trial's ``facts`` added and, on a failure
    report, every objective (metric, mode) set to its worst value (+inf when minimised, -inf when maximised)."""
    out = {**metrics, EPOCHS_DONE: int(metrics["epoch"]) + 1, **(facts or {})}
    if FAILURE_KEY in metrics:
        out.update({metric: math.inf if mode == "min" else -math.inf for metric, mode in objectives})
    return out


class TrialReport(TuneReportCallback):
    """Forwards rank 0's reports to the Tune trial through :func:`for_tune`, the trial's resolved config with the
    first one only."""

    def __init__(self, objectives: list[tuple[str, str]], facts: dict[str, Any]) -> None:
        super().__init__()
        self.objectives = objectives
        self.facts = facts

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        super().after_report(run_context, [for_tune(metrics[0], self.objectives, self.facts)], checkpoint)
        self.facts = {EPOCHS_PLANNED: self.facts[EPOCHS_PLANNED]}
