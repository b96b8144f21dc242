"""Declaring MBeans in Python: attributes and operations with their metadata.

An MBean is a class whose attributes are ``@attribute`` getters (with an
optional ``.setter``) and whose operations are ``@operation`` methods. The
metadata (types, descriptions, impact) is what getMBeanInfo serves, what
lb-console builds its forms from, and what /metrics reads, so it is declared
once, next to the code.
"""

from __future__ import annotations

import enum
import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from lbmgmt.management.errors import BadParameter
from lbmgmt.settings import Setting


class Impact(enum.StrEnum):
    INFO = "INFO"  # reads only: a readonly user may invoke it
    ACTION = "ACTION"  # changes something: readwrite only, consoles ask to confirm


# Open types, named as in JSON Schema (what JSON-RPC clients already know).
_TYPE_NAMES: dict[Any, str] = {bool: "boolean", int: "integer", float: "number", str: "string",
                               dict: "object", list: "array", type(None): "null"}


def type_name(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    origin = typing.get_origin(tp)
    if origin in (list, dict):
        return _TYPE_NAMES[origin]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return type_name(args[0])
    raise TypeError(f"no open type for {tp!r}")


def check_value(value: Any, type_: str, what: str) -> Any:
    """Value of JSON ``type_`` or BadParameter; integers pass as numbers."""
    ok = {
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool)
        and math.isfinite(value),
        "string": isinstance(value, str),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }.get(type_, True)
    if not ok:
        raise BadParameter(f"{what} must be {type_}, not {_json_type(value)}",
                           expected=type_, got=_json_type(value))
    return float(value) if type_ == "number" else value


def _json_type(value: Any) -> str:
    for py, name in _TYPE_NAMES.items():
        if isinstance(value, py) and not (py is int and isinstance(value, bool)):
            return "number" if py is float else name
    return type(value).__name__


@dataclass(frozen=True, slots=True)
class AttributeInfo:
    name: str
    type: str
    description: str
    readable: bool = True
    writable: bool = False
    unit: str | None = None
    metric: str | None = "gauge"  # gauge | counter | None (not exported)
    metric_label: str | None = None  # for object-valued attributes: the label of their keys
    # Keys of a counter object that are levels, not counts ("active"): exported as a gauge
    # of their own, labelled state="<key>", beside the counter
    gauges: tuple[str, ...] = ()
    minimum: int | None = None  # bounds of a writable setting (``attribute.of``)
    maximum: int | None = None


@dataclass(frozen=True, slots=True)
class ParameterInfo:
    name: str
    type: str
    description: str


@dataclass(frozen=True, slots=True)
class OperationInfo:
    name: str
    description: str
    impact: Impact
    return_type: str
    parameters: tuple[ParameterInfo, ...]


class attribute:  # noqa: N801 - used as a decorator, like property
    """``@attribute("integer", "what it is")`` on a getter; ``@X.setter`` makes it writable.

    Unlike ``property``, the setter takes a name of its own (``def _set_x``),
    which keeps type checkers from seeing the attribute defined twice.
    """

    def __init__(self, type_: str, description: str, *, unit: str | None = None,
                 metric: str | None = "gauge", metric_label: str | None = None,
                 gauges: tuple[str, ...] = ()) -> None:
        self.type = type_
        self.gauges = gauges
        self.description = description
        self.unit = unit
        self.metric = metric if type_ in ("integer", "number", "boolean", "object") else None
        self.metric_label = metric_label
        self.fget: Callable[[Any], Any] | None = None
        self.fset: Callable[[Any, Any], None] | None = None
        self.name = ""
        self.setting: Setting | None = None

    @classmethod
    def of(cls, setting: Setting) -> attribute:
        """The attribute for a declared ``Setting``: its type, doc, unit and bounds.

        Its setter gets only values ``setting.check`` passed; the getter must be
        named as the setting's ``attribute``.
        """
        made = cls("integer", setting.doc, unit=setting.unit)
        made.setting = setting
        return made

    def __call__(self, fget: Callable[[Any], Any]) -> attribute:
        self.fget = fget
        self.name = fget.__name__
        if self.setting is not None and self.setting.attribute != self.name:
            raise TypeError(f"attribute {self.name} declared for setting {self.setting.key}, "
                            f"whose attribute is {self.setting.attribute}")
        return self

    def setter(self, fset: Callable[[Any, Any], None]) -> attribute:
        """Use under its own name (``def _set_x``): the attribute keeps the getter's name."""
        setting = self.setting
        if setting is None:
            self.fset = fset
        else:
            def checked(bean: Any, value: Any) -> None:
                fset(bean, setting.check(value))
            self.fset = checked
        return self

    def info(self) -> AttributeInfo:
        setting = self.setting
        return AttributeInfo(self.name, self.type, self.description, True, self.fset is not None,
                             self.unit, self.metric, self.metric_label, self.gauges,
                             setting.minimum if setting else None,
                             setting.maximum if setting else None)


def operation(impact: Impact, description: str, **param_descriptions: str
              ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark an (async or plain) method as an operation; parameter types come from its hints."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func.__mbean_operation__ = (impact, description, param_descriptions)  # type: ignore[attr-defined]
        return func

    return mark


def _operation_info(func: Callable[..., Any]) -> OperationInfo:
    impact, description, docs = func.__mbean_operation__  # type: ignore[attr-defined]
    hints = typing.get_type_hints(func)
    params = []
    for name in list(inspect.signature(func).parameters)[1:]:  # skip self
        if name not in hints:
            raise TypeError(f"operation {func.__name__}: parameter {name} needs a type hint")
        params.append(ParameterInfo(name, type_name(hints[name]), docs.get(name, "")))
    return OperationInfo(func.__name__, description, impact,
                         type_name(hints.get("return", type(None))), tuple(params))


@dataclass(frozen=True, slots=True)
class MBeanInfo:
    class_name: str
    description: str
    attributes: dict[str, AttributeInfo]
    operations: dict[str, OperationInfo]
    notifications: tuple[str, ...]


class MBean:
    """Base of every MBean; subclasses declare attributes and operations."""

    description: ClassVar[str] = ""
    notification_types: ClassVar[tuple[str, ...]] = ()
    _info: ClassVar[MBeanInfo | None] = None

    @classmethod
    def mbean_info(cls) -> MBeanInfo:
        if cls.__dict__.get("_info") is None:
            attrs: dict[str, AttributeInfo] = {}
            ops: dict[str, OperationInfo] = {}
            for klass in reversed(cls.__mro__):
                for name, value in vars(klass).items():
                    if isinstance(value, attribute):
                        attrs[value.name] = value.info()
                    elif callable(value) and hasattr(value, "__mbean_operation__"):
                        ops[name] = _operation_info(value)
            cls._info = MBeanInfo(cls.__name__, cls.description or (cls.__doc__ or "").strip(),
                                  attrs, ops, cls.notification_types)
        assert cls._info is not None
        return cls._info

    @classmethod
    def _descriptor(cls, name: str) -> attribute:
        for klass in cls.__mro__:
            for value in vars(klass).values():
                if isinstance(value, attribute) and value.name == name:
                    return value
        raise AttributeError(name)

    def read(self, name: str) -> Any:
        descriptor = self._descriptor(name)
        assert isinstance(descriptor, attribute) and descriptor.fget is not None
        return descriptor.fget(self)

    def write(self, name: str, value: Any) -> None:
        descriptor = self._descriptor(name)
        assert isinstance(descriptor, attribute) and descriptor.fset is not None
        descriptor.fset(self, value)

    async def call(self, name: str, args: dict[str, Any]) -> Any:
        result = getattr(self, name)(**args)
        if inspect.isawaitable(result):
            result = await result
        return result
