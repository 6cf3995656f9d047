"""Typed, validated run configuration (YAML → :class:`Config`).

This layer depends on nothing else in distmtl: checks that need the registries (names of sources,
tasks, architectures, weightings, metrics) live in :mod:`distmtl.engine.assembly`.
"""

from distmtl.config.loading import (
    apply_overrides,
    config_from_dict,
    load_config,
    load_yaml,
    parse_set_args,
    plain_model,
    without,
)
from distmtl.config.schema import Config

__all__ = ["Config", "apply_overrides", "config_from_dict", "load_config", "load_yaml", "parse_set_args", "plain_model",
           "without"]
