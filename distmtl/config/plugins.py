"""Plug-in settings: a config section whose keys depend on the plug-in it names.

``model.architecture`` and ``weighting.method`` each name a plug-in, and each plug-in declares its own
pydantic settings model when it registers (``@ARCHITECTURES.register("cross_stitch",
settings=CrossStitchSettings)``). A :class:`PluginKind` collects those declarations; the section is then a
union tagged by the plug-in's name: validating it picks the model of the named plug-in — the section's
common keys plus that plug-in's settings — so a key of another plug-in is refused like any unknown key,
and nothing in :mod:`distmtl.config.schema` names a plug-in. Several declarations under one name (an
architecture and the structure controller registered for it) are merged; a settings field both declare
as a section (``selective``) becomes one section holding both sets of keys.

The kinds know only the packages that register the built-in plug-ins, imported the first time a section
is validated, so that ``distmtl.config`` validates any config on its own.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

#: The pydantic error type of a section that names no declared plug-in (its message is the whole one-line error).
UNKNOWN_PLUGIN = "unknown_plugin"
#: The packages whose import registers every built-in plug-in of every kind (the engine imports the rest).
PLUGIN_PACKAGES = ("distmtl.engine",)
#: Every kind by its config section, so that a pickled section finds its model again.
_KINDS: dict[str, PluginKind] = {}


class Settings(BaseModel):
    """Base of every config section and plug-in settings model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginKind:
    """The plug-ins of one kind (architectures, weighting methods) and their settings models.

    ``section`` is the config section (``model``), ``key`` the field in it that names the plug-in
    (``architecture``), ``base`` the section's common keys (a :class:`Settings` subclass holding ``key``).
    """

    def __init__(self, what: str, section: str, key: str) -> None:
        self.what, self.section, self.key = what, section, key
        _KINDS[section] = self
        self.base: type[Settings] | None = None
        self.default_name: str | None = None
        self._declared: dict[str, list[type[BaseModel]]] = {}
        self._models: dict[str, type[Settings]] = {}

    @property
    def config_key(self) -> str:
        return f"{self.section}.{self.key}"

    def bind(self, base: type[Settings]) -> type[Settings]:
        """Decorator for the section's common model (its ``key`` field names the plug-in)."""
        self.base = base
        return base

    def add(self, name: str, settings: type[BaseModel] | None = None, default: bool = False) -> None:
        """Declare plug-in ``name``, with ``settings`` (a model whose fields become keys of the section) if it has any;
        ``default``: the plug-in a section that names none gets."""
        if default:
            self.default_name = name
        declared = self._declared.setdefault(name, [])
        if settings is not None:
            declared.append(settings)
        self._models.pop(name, None)

    def names(self) -> list[str]:
        """Every declared plug-in, sorted."""
        _load_plugins()
        return sorted(self._declared)

    def model(self, name: str) -> type[Settings]:
        """The section's model for plug-in ``name``: the common keys and the plug-in's own settings."""
        if name not in self._models:
            fields = _merged_fields(name, self._declared.get(name, []))
            title = f"{''.join(part.title() for part in name.split('_'))}{self.section.title()}Config"
            model = create_model(title, __base__=self.base, **fields)
            _picklable(model, self.section, name, ())
            for field, (annotation, _) in fields.items():
                if annotation.__module__ == __name__:
                    _picklable(annotation, self.section, name, (field,))
            self._models[name] = model
        return self._models[name]

    def owners(self, field: str) -> list[str]:
        """The plug-ins whose settings have the key ``field``."""
        _load_plugins()
        return sorted(name for name, declared in self._declared.items()
                      if any(field in settings.model_fields for settings in declared))

    def validate(self, value: Any, handler: Any) -> Settings:
        """Validate a section: a mapping becomes the model of the plug-in it names (the base's default if it names
        none); an unknown name is one error naming the choices."""
        if not isinstance(value, dict):
            return handler(value)
        name = self.chosen(value)
        if not isinstance(name, str) or name not in self.names():
            raise PydanticCustomError(UNKNOWN_PLUGIN, f"{self.config_key}: unknown {self.what} {name!r} "
                                                      f"(available: {', '.join(self.names())})")
        return self.model(name).model_validate({**value, self.key: name})

    def chosen(self, section: dict[str, Any]) -> Any:
        """The plug-in a section's raw mapping names (the kind's default where it names none)."""
        _load_plugins()
        return section.get(self.key, self.default_name)

    def of(self, **values: Any) -> Settings:
        """The section of ``values`` (the plug-in's settings among them), validated: e.g.
        ``ARCHITECTURE.of(architecture="cross_stitch", cross_stitch={"alpha_same": 1.0})``."""
        return self.validate(values, None)

    def default(self) -> Settings:
        """The section with every key at its default."""
        return self.of()


def _merged_fields(name: str, declared: list[type[BaseModel]]) -> dict[str, Any]:
    """The fields of ``declared`` settings models as ``create_model`` arguments; a field that several declare
    must be a section (a model) in each, and becomes one section with all their keys."""
    by_field: dict[str, list[Any]] = {}
    for settings in declared:
        for field, info in settings.model_fields.items():
            by_field.setdefault(field, []).append(info)
    fields: dict[str, Any] = {}
    for field, infos in by_field.items():
        if len(infos) == 1:
            fields[field] = (infos[0].annotation, infos[0])
            continue
        parts = [info.annotation for info in infos][::-1]  # the first declared lists its keys first
        if not all(isinstance(p, type) and issubclass(p, BaseModel) for p in parts):
            raise TypeError(f"plug-in {name!r}: settings field {field!r} is declared twice "
                            "and is not a section in both")
        merged = create_model(f"{parts[-1].__name__}And{len(parts) - 1}", __base__=tuple(parts))
        fields[field] = (merged, Field(default_factory=merged))
    return fields


def _picklable(model: type[BaseModel], section: str, name: str, path: tuple[str, ...]) -> None:
    """Let instances of a model built here pickle (to Ray workers) by naming how to rebuild their class: the
    plug-in's section model, or a section inside it, found again through the kind in the receiving process."""

    def reduce(self: BaseModel) -> tuple[Any, tuple[Any, ...]]:
        return _rebuild, (section, name, path, self.model_dump(exclude_unset=True))

    model.__reduce__ = reduce  # type: ignore[method-assign, assignment]


def _rebuild(section: str, name: str, path: tuple[str, ...], data: dict[str, Any]) -> BaseModel:
    """The unpickling half of :func:`_picklable`."""
    _load_plugins()
    model: Any = _KINDS[section].model(name)
    for field in path:
        model = model.model_fields[field].annotation
    return model.model_validate(data)


def _load_plugins() -> None:
    for package in PLUGIN_PACKAGES:
        importlib.import_module(package)
