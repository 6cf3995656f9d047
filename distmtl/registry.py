"""The one plug-in pattern of distmtl: a name → implementation registry filled by decorators.

Sources, task kinds, encoders, architectures and weightings each have one. A registry module
imports no implementation; each package's ``__init__`` imports its implementations, so that
importing the package is enough for every built-in name to be registered. A registry of plug-ins that
carry config settings (architectures, weighting methods, structure controllers) is tied to the config's
:class:`~distmtl.config.plugins.PluginKind`, and each registration declares its settings model there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from distmtl.errors import ConfigError

T = TypeVar("T")


class SettingsKind(Protocol):
    """Where plug-ins declare their config settings (:class:`distmtl.config.plugins.PluginKind`)."""

    def add(self, name: str, settings: Any = None, default: bool = False) -> None: ...


class Registry(Generic[T]):
    """Maps names to implementations; ``register`` is a decorator, ``get`` gives a one-line error on unknown names."""

    def __init__(self, what: str, config_key: str, settings: SettingsKind | None = None) -> None:
        self.what = what
        self.config_key = config_key
        self.settings = settings
        self._items: dict[str, T] = {}

    def register(self, name: str, settings: Any = None, default: bool = False) -> Callable[[T], T]:
        """Decorator: make the decorated item available under ``name``. In a registry tied to a config section,
        ``settings`` (a pydantic model) declares the config keys it takes and ``default`` makes it what a config
        that names none gets."""
        if self.settings is not None:
            self.settings.add(name, settings, default)
        elif settings is not None or default:
            raise TypeError(f"{self.what} '{name}': this registry takes no settings")

        def decorator(item: T) -> T:
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        """The item registered as ``name``; :class:`ConfigError` naming the config key and the choices otherwise."""
        if name not in self._items:
            raise ConfigError(
                f"{self.config_key}: unknown {self.what} '{name}' (available: {', '.join(sorted(self._items))})"
            )
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(sorted(self._items))
