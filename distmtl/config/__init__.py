"""Typed, validated run configuration (YAML → :class:`Config`)."""

from distmtl.config.checks import check_config
from distmtl.config.loading import apply_overrides, config_from_dict, load_config, load_yaml, parse_set_args
from distmtl.config.schema import Config

__all__ = ["Config", "check_config", "apply_overrides", "config_from_dict", "load_config", "load_yaml", "parse_set_args"]
