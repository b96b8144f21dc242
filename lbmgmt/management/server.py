"""The MBean server: registry of named MBeans and access-checked get/set/invoke.

This is where roles are enforced, so every way in (JSON-RPC, metrics, the
console) gets the same answer to "may this caller do that".
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

from lbmgmt.management.errors import (BadParameter, Forbidden, InvalidParams, NotWritable,
                                      OperationFailed, UnknownAttribute, UnknownMBean,
                                      UnknownOperation)
from lbmgmt.management.mbean import Impact, MBean, check_value
from lbmgmt.management.notifications import ATTRIBUTE_CHANGE, NotificationBuffer
from lbmgmt.management.objectname import ObjectName


class Role(enum.StrEnum):
    READONLY = "readonly"  # read attributes, poll notifications, invoke INFO operations
    READWRITE = "readwrite"  # everything


def parse_name(text: Any, *, pattern: bool = False) -> ObjectName:
    try:
        name = ObjectName.parse(text)
    except ValueError as exc:
        raise InvalidParams(f"bad object name: {exc}") from None
    if name.is_pattern and not pattern:
        raise InvalidParams(f"{text!r} is a pattern; a single MBean name is needed here")
    return name


class MBeanServer:
    def __init__(self, notifications: NotificationBuffer | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.notifications = notifications or NotificationBuffer()
        self.clock = clock
        self._beans: dict[ObjectName, MBean] = {}

    def __len__(self) -> int:
        return len(self._beans)

    def register(self, name: ObjectName | str, bean: MBean) -> ObjectName:
        name = ObjectName.parse(name) if isinstance(name, str) else name
        if name.is_pattern:
            raise ValueError(f"cannot register under a pattern: {name}")
        if name in self._beans:
            raise ValueError(f"already registered: {name}")
        bean.mbean_info()  # fail at registration, not at the first client call
        self._beans[name] = bean
        return name

    def unregister(self, name: ObjectName | str) -> None:
        name = ObjectName.parse(name) if isinstance(name, str) else name
        self._beans.pop(name, None)

    def query(self, pattern: ObjectName | str = "*:*") -> list[ObjectName]:
        pattern = ObjectName.parse(pattern) if isinstance(pattern, str) else pattern
        return sorted((n for n in self._beans if pattern.matches(n)), key=str)

    def lookup(self, name: ObjectName) -> MBean:
        bean = self._beans.get(name)
        if bean is None:
            raise UnknownMBean(str(name), mbean=str(name))
        return bean

    def items(self) -> list[tuple[ObjectName, MBean]]:
        return sorted(self._beans.items(), key=lambda kv: str(kv[0]))

    def names(self) -> list[ObjectName]:
        """Every registered name, in registration order: a cheap snapshot (no sorting, no
        new objects but the list) for whoever reads the MBeans over several loop turns."""
        return list(self._beans)

    def get(self, name: ObjectName) -> MBean | None:
        """The MBean registered under ``name``, or None (unregistered since)."""
        return self._beans.get(name)

    # -- access ---------------------------------------------------------------
    def info(self, name: ObjectName, role: Role) -> dict[str, Any]:
        bean = self.lookup(name)
        info = bean.mbean_info()
        rw = role is Role.READWRITE
        return {
            "name": str(name),
            "className": info.class_name,
            "description": info.description,
            "attributes": [
                {"name": a.name, "type": a.type, "description": a.description,
                 "readable": a.readable, "writable": a.writable, "unit": a.unit,
                 "canWrite": a.writable and rw,
                 **({"minimum": a.minimum, "maximum": a.maximum} if a.minimum is not None
                    else {})}
                for a in info.attributes.values()],
            "operations": [
                {"name": o.name, "description": o.description, "impact": str(o.impact),
                 "returnType": o.return_type,
                 "parameters": [{"name": p.name, "type": p.type, "description": p.description}
                                for p in o.parameters],
                 "canInvoke": rw or o.impact is Impact.INFO}
                for o in info.operations.values()],
            "notifications": list(info.notifications),
            "access": {"role": str(role), "canWrite": rw, "canInvokeAction": rw},
        }

    def get_attribute(self, name: ObjectName, attribute: str) -> Any:
        bean = self.lookup(name)
        if attribute not in bean.mbean_info().attributes:
            raise UnknownAttribute(f"{name} has no attribute {attribute!r}", mbean=str(name),
                                   attribute=attribute)
        return bean.read(attribute)

    def set_attribute(self, name: ObjectName, attribute: str, value: Any, role: Role) -> Any:
        bean = self.lookup(name)
        info = bean.mbean_info().attributes.get(attribute)
        if info is None:
            raise UnknownAttribute(f"{name} has no attribute {attribute!r}", mbean=str(name),
                                   attribute=attribute)
        if not info.writable:
            raise NotWritable(f"{name} {attribute} is read-only", mbean=str(name),
                              attribute=attribute)
        if role is not Role.READWRITE:
            raise Forbidden(f"role {role} may not set attributes", role=str(role))
        value = check_value(value, info.type, attribute)
        old = bean.read(attribute)
        try:
            bean.write(attribute, value)
        except ValueError as exc:
            raise BadParameter(str(exc), attribute=attribute) from None
        new = bean.read(attribute)
        self.notifications.emit(ATTRIBUTE_CHANGE, str(name), f"{attribute} changed",
                                {"attribute": attribute, "type": info.type,
                                 "oldValue": old, "newValue": new}, now=self.clock())
        return new

    async def invoke(self, name: ObjectName, operation: str, params: Any, role: Role) -> Any:
        bean = self.lookup(name)
        info = bean.mbean_info().operations.get(operation)
        if info is None:
            raise UnknownOperation(f"{name} has no operation {operation!r}", mbean=str(name),
                                   operation=operation)
        if info.impact is Impact.ACTION and role is not Role.READWRITE:
            raise Forbidden(f"role {role} may not invoke ACTION operation {operation}",
                            role=str(role))
        if params is None:
            params = []
        if isinstance(params, list):
            if len(params) != len(info.parameters):
                raise BadParameter(f"{operation} takes {len(info.parameters)} parameter(s), "
                                   f"got {len(params)}", operation=operation)
            args = dict(zip((p.name for p in info.parameters), params, strict=True))
        elif isinstance(params, dict):
            expected = {p.name for p in info.parameters}
            if set(params) != expected:
                raise BadParameter(f"{operation} takes parameters {sorted(expected)}, "
                                   f"got {sorted(params)}", operation=operation)
            args = dict(params)
        else:
            raise InvalidParams("params must be an array or an object")
        for p in info.parameters:
            args[p.name] = check_value(args[p.name], p.type, f"parameter {p.name}")
        try:
            return await bean.call(operation, args)
        except (ValueError, LookupError) as exc:
            # str(KeyError("x")) is "'x'": take its argument, not its repr-like str
            text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            raise OperationFailed(text, operation=operation) from None
