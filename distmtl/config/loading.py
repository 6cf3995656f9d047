"""Read YAML, apply ``key=value`` overrides, and turn pydantic errors into one-line messages."""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from distmtl.config.plugins import UNKNOWN_PLUGIN
from distmtl.config.schema import PLUGIN_KINDS, Config, ModelConfig
from distmtl.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, which also reads exponent floats without a dot or an exponent sign (``1e-3``,
    ``1.0e6``) as numbers, as YAML 1.2 does; YAML 1.1's pattern leaves them strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Read a YAML mapping from ``path``; missing files and malformed YAML raise :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path} (check the path)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); give a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML in {path}{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {path} must hold a YAML mapping at the top level (got {type(data).__name__})")
    return data


def parse_set_args(items: list[str]) -> dict[str, Any]:
    """Parse ``--set key.path=value`` items; values are read as YAML scalars (``1e-3``, ``true``, ``[1, 2]``)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. optim.lr=0.001), got '{item}'")
        try:
            overrides[key.strip()] = yaml.load(raw, Loader=_Loader)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot read value '{raw}' as YAML") from None
    return overrides


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with each dotted ``key.path`` set to its value (parents created as needed)."""
    result = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = result
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set '{dotted}': '{part}' holds a value, not a section")
            node = child
        node[leaf] = value
    return result


def without(data: dict[str, Any], keys: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """A copy of ``data`` without the dotted ``keys`` (those it does not hold are ignored)."""
    result = copy.deepcopy(data)
    for dotted in keys:
        *parents, leaf = dotted.split(".")
        node = result
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return result


def plain_model(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a config as a dict) without the keys of its architecture: its ``model`` section keeps the keys
    every architecture has, so that another architecture can be set."""
    model = data.get("model", {})
    return without(data, [f"model.{key}" for key in model if key not in ModelConfig.model_fields])


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a raw mapping into a :class:`Config`; the first problem becomes a one-line :class:`ConfigError`."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_error(exc.errors()[0], data=data)}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load, override and validate a run configuration file."""
    data = apply_overrides(load_yaml(path), overrides or {})
    return config_from_dict(data, source=str(path))


def describe_error(error: dict[str, Any], root: type[BaseModel] = Config, data: Any = None) -> str:
    """Render one pydantic error of a ``root`` model (validated from ``data``) as ``key.path: what is wrong (what
    was given)``."""
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) or "(top level)"
    if error["type"] == UNKNOWN_PLUGIN:
        return error["msg"]
    if error["type"] == "extra_forbidden":
        model, kind, chosen = _section(loc[:-1], root, data)
        if kind is not None and (owners := kind.owners(loc[-1])):
            return (f"{key}: a setting of {kind.what} {' / '.join(map(repr, owners))}, not of {chosen!r} (this "
                    f"config's {kind.config_key}); remove it, or set {kind.config_key} to {owners[0]!r}")
        valid = list(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(loc[-1], valid, n=1)
        if close:
            return f"unknown key '{key}' (did you mean '{'.'.join(loc[:-1] + [close[0]])}'?)"
        return f"unknown key '{key}'" + (f" (valid keys: {', '.join(valid)})" if valid else "")
    if error["type"] == "missing":
        return f"missing required key '{key}'"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error":
        return f"{key}: {message}" if loc else message
    return f"{key}: {message} (got {error.get('input')!r})"


#: Each plug-in section's common model → its kind.
_KIND_OF = {kind.base: kind for kind in PLUGIN_KINDS.values()}


def _section(parent: list[str], root: type[BaseModel], data: Any) -> tuple[type[BaseModel] | None, Any, str | None]:
    """The model of the section at ``parent`` (for a plug-in section: the named plug-in's), and for a plug-in
    section its kind and the plug-in it names."""
    model, node, kind, name = root, data, None, None
    for part in parent:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None, None, None
        node = node.get(part) if isinstance(node, dict) else None
        kind = _KIND_OF.get(annotation)
        if kind is None:
            model = annotation
            continue
        name = kind.chosen(node) if isinstance(node, dict) else None
        model = kind.model(name) if name in kind.names() else annotation
    return model, kind, name
