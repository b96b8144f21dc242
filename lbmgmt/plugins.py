"""Resolving pluggable classes (monitors, redirectors) by name or ``module:Class``.

Built-ins are addressed by short names in config files; anything else is a
dotted import path, so a site can ship its own monitor without forking.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class PluginError(ValueError):
    """The named plugin cannot be found or is not of the expected kind."""


def resolve_plugin(kind: str, spec: str, builtins: Mapping[str, type[T]],
                   base: type[Any]) -> type[T]:
    if spec in builtins:
        return builtins[spec]
    if ":" not in spec:
        raise PluginError(f"unknown {kind} {spec!r}: use one of "
                          f"{', '.join(sorted(builtins))} or 'module:Class'")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"{kind} {spec!r}: cannot import {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise PluginError(f"{kind} {spec!r}: {module_name!r} has no {attr!r}")
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise PluginError(f"{kind} {spec!r} is not a subclass of {base.__name__}")
    return obj
