"""Checks that need the registries: names of source, tasks, encoder, architecture, weighting and metric.

Run before anything starts (no data is built, no Ray is started) so that a bad config fails in
a second with one line instead of inside a remote worker.
"""

from __future__ import annotations

from distmtl.config.schema import Config
from distmtl.errors import ConfigError


def check_config(config: Config) -> None:
    """Raise :class:`ConfigError` for the first name in ``config`` that nothing registered answers to."""
    from distmtl.data.sources import check_targets
    from distmtl.models import build_model
    from distmtl.tasks import build_tasks, selectable_metrics
    from distmtl.weighting import build_weighting

    specs = check_targets(config.data, config.tasks)
    tasks = build_tasks(config.tasks, specs)
    build_model(config.model, tasks, in_channels=3)
    build_weighting(config.weighting, config.tasks)
    metrics = selectable_metrics(tasks)
    if config.train.selection_metric not in metrics:
        raise ConfigError(
            f"train.selection_metric: '{config.train.selection_metric}' is not reported by these tasks "
            f"(choose one of: {', '.join(metrics)})"
        )
