"""A tiny name → factory registry shared by encoders and architectures."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from distmtl.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; ``register`` is a decorator, ``get`` gives a one-line error on unknown names."""

    def __init__(self, what: str, config_key: str) -> None:
        self.what = what
        self.config_key = config_key
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ConfigError(
                f"{self.config_key}: unknown {self.what} '{name}' (available: {', '.join(sorted(self._items))})"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)
