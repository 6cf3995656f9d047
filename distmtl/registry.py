"""The one plug-in pattern of distmtl: a name → implementation registry filled by decorators.

Sources, task kinds, encoders, architectures and weightings each have one. A registry module
imports no implementation; each package's ``__init__`` imports its implementations, so that
importing the package is enough for every built-in name to be registered.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from distmtl.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to implementations; ``register`` is a decorator, ``get`` gives a one-line error on unknown names."""

    def __init__(self, what: str, config_key: str) -> None:
        self.what = what
        self.config_key = config_key
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the decorated item available under ``name``."""

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
