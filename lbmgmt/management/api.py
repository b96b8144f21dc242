"""The JSON-RPC methods of the management port, over an MBeanServer.

Names follow JMX's MBeanServerConnection (queryNames, getAttribute, invoke...)
so anyone who scripted JMX or Jolokia finds them where expected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lbmgmt import __version__
from lbmgmt.management.errors import ERROR_TABLE, InvalidParams
from lbmgmt.management.notifications import Notification, NotificationBuffer
from lbmgmt.management.server import MBeanServer, Role, parse_name

API_VERSION = "1"
MAX_POLL_TIMEOUT = 60.0
MIN_PARK = 1.0  # seconds a long poll waits before a newer one may make it answer


class NotificationPulse:
    """Wakes every long-poll waiter when a notification is emitted; bounds how many wait.

    At most ``max_parked`` polls wait at once, ``max_per_address`` of them from one
    client address: one more makes room by answering the oldest (that client's own
    when it is over its share) at once, empty, counted in ``released`` by limit.
    ``parked`` maps each waiting task to its client, so a stopping port can end
    them at once.
    """

    def __init__(self, buffer: NotificationBuffer, *, max_parked: int = 256,
                 max_per_address: int = 16) -> None:
        self._buffer = buffer
        self.max_parked = max_parked
        self.max_per_address = max_per_address
        # Each waiter's own future, oldest first, with its client and task.
        self._waiters: dict[asyncio.Future[bool],
                            tuple[str, asyncio.Task[Any] | None, float]] = {}
        self._by_address: Counter[str] = Counter()
        self.released: Counter[str] = Counter({"polls": 0, "polls_per_address": 0})
        buffer.listeners.append(self._on_emit)

    @property
    def parked(self) -> dict[asyncio.Task[Any] | None, str]:
        return {task: client for client, task, _ in self._waiters.values()}

    def _on_emit(self, _: Notification) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(False)

    def _release_oldest(self, client: str | None, limit: str, now: float) -> bool:
        """Answer the oldest waiter (of ``client``, or of all) to make room, if it has
        waited ``MIN_PARK`` s; False if it is younger (the newcomer must wait instead)."""
        for waiter, (owner, _, since) in self._waiters.items():
            if not waiter.done() and (client is None or owner == client):
                if now - since < MIN_PARK:
                    return False
                waiter.set_result(True)
                self._forget(waiter)
                self.released[limit] += 1
                return True
        return True

    def _forget(self, waiter: asyncio.Future[bool]) -> None:
        entry = self._waiters.pop(waiter, None)
        if entry is not None:
            self._by_address[entry[0]] -= 1
            if self._by_address[entry[0]] <= 0:
                del self._by_address[entry[0]]

    async def wait(self, timeout: float, client: str = "?") -> bool:
        """Wait for the next notification or ``timeout``; True if released to make room.

        Pollers past the caps that poll again at once would evict each other in a busy
        loop: the oldest is answered only once it has waited ``MIN_PARK`` s; until then
        the newcomer itself waits that long, unparked, and is answered empty.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        over: tuple[str | None, str] | None = None
        if self._by_address[client] >= self.max_per_address:
            over = (client, "polls_per_address")
        elif len(self._waiters) >= self.max_parked:
            over = (None, "polls")
        if over is not None and not self._release_oldest(*over, now):
            self.released[over[1]] += 1
            await asyncio.sleep(min(timeout, MIN_PARK))
            return True
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters[waiter] = (client, asyncio.current_task(), now)
        self._by_address[client] += 1
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    return await waiter
            return False
        finally:
            self._forget(waiter)

    def close(self) -> None:
        """Stop listening to the buffer and cancel every parked wait."""
        if self._on_emit in self._buffer.listeners:
            self._buffer.listeners.remove(self._on_emit)
        for _, task, _ in list(self._waiters.values()):
            if task is not None:
                task.cancel()


@dataclass(slots=True)
class CallContext:
    server: MBeanServer
    role: Role
    pulse: NotificationPulse
    daemon: str  # "balancer" or "edge"
    user: str | None = None
    client: str = "?"  # the caller's address


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidParams(f"{what} must be a string")
    return value


async def queryNames(ctx: CallContext, pattern: Any = "*:*") -> list[str]:
    return [str(n) for n in ctx.server.query(parse_name(_str(pattern, "pattern"),
                                                        pattern=True))]


async def getMBeanInfo(ctx: CallContext, name: Any) -> dict[str, Any]:
    return ctx.server.info(parse_name(_str(name, "name")), ctx.role)


async def getAttribute(ctx: CallContext, name: Any, attribute: Any) -> Any:
    return ctx.server.get_attribute(parse_name(_str(name, "name")), _str(attribute, "attribute"))


async def getAttributes(ctx: CallContext, name: Any, attributes: Any = None) -> dict[str, Any]:
    """Several attributes at once; all readable ones when ``attributes`` is null."""
    object_name = parse_name(_str(name, "name"))
    if attributes is None:
        bean = ctx.server.lookup(object_name)
        attributes = [a.name for a in bean.mbean_info().attributes.values() if a.readable]
    if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
        raise InvalidParams("attributes must be an array of strings or null")
    return {attribute: ctx.server.get_attribute(object_name, attribute)
            for attribute in attributes}


async def setAttribute(ctx: CallContext, name: Any, attribute: Any, value: Any) -> Any:
    return ctx.server.set_attribute(parse_name(_str(name, "name")),
                                    _str(attribute, "attribute"), value, ctx.role)


async def invoke(ctx: CallContext, name: Any, operation: Any, params: Any = None) -> Any:
    return await ctx.server.invoke(parse_name(_str(name, "name")),
                                   _str(operation, "operation"), params, ctx.role)


async def pollNotifications(ctx: CallContext, since: Any = None, timeout: Any = 0,
                            types: Any = None, epoch: Any = None) -> dict[str, Any]:
    """Notifications after ``since`` (null: from now on), waiting up to ``timeout`` s.

    ``epoch``: the one the last answer carried. A ``since`` from another epoch (the
    daemon restarted) or beyond the last notification (a restart the caller did not
    say) starts again from the oldest still buffered: ``reset`` is true and ``lost``
    counts this epoch's notifications that fell out of the buffer before it.
    """
    buffer = ctx.server.notifications
    if since is not None and (not isinstance(since, int) or isinstance(since, bool)
                              or since < 0):
        raise InvalidParams("since must be a sequence number >= 0 or null")
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0:
        raise InvalidParams("timeout must be a number of seconds >= 0")
    if types is not None and not (isinstance(types, list)
                                  and all(isinstance(t, str) for t in types)):
        raise InvalidParams("types must be an array of strings or null")
    if epoch is not None and not isinstance(epoch, str):
        raise InvalidParams("epoch must be a string (from an earlier answer) or null")
    reset = False
    if since is None:
        since = buffer.last_sequence
    elif since > buffer.last_sequence or (epoch is not None and epoch != buffer.epoch):
        since, reset = 0, True
    wanted = set(types) if types else None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(float(timeout), MAX_POLL_TIMEOUT)
    while True:
        items, lost = buffer.since(since)
        next_seq = items[-1].sequence if items else since
        if wanted is not None:
            items = [n for n in items if n.type in wanted]
        remaining = deadline - loop.time()
        if items or lost or reset or remaining <= 0:
            return {"notifications": [n.to_json() for n in items], "next": next_seq,
                    "lost": lost, "epoch": buffer.epoch, "reset": reset}
        since = next_seq  # filtered-out ones are consumed
        if await ctx.pulse.wait(remaining, ctx.client):  # made room for a newer poll
            return {"notifications": [], "next": since, "lost": 0, "epoch": buffer.epoch,
                    "reset": False}


async def version(ctx: CallContext) -> dict[str, Any]:
    return {"product": "lbmgmt", "version": __version__, "api": API_VERSION,
            "daemon": ctx.daemon, "role": str(ctx.role), "user": ctx.user,
            "lastNotification": ctx.server.notifications.last_sequence,
            "epoch": ctx.server.notifications.epoch}


async def rpc_discover(ctx: CallContext) -> dict[str, Any]:
    return OPENRPC


METHODS: dict[str, Callable[..., Awaitable[Any]]] = {
    "queryNames": queryNames,
    "getMBeanInfo": getMBeanInfo,
    "getAttribute": getAttribute,
    "getAttributes": getAttributes,
    "setAttribute": setAttribute,
    "invoke": invoke,
    "pollNotifications": pollNotifications,
    "version": version,
    "rpc.discover": rpc_discover,
}


def _p(name: str, schema: dict[str, Any], description: str, required: bool = True
       ) -> dict[str, Any]:
    return {"name": name, "schema": schema, "description": description, "required": required}


_NAME = _p("name", {"type": "string"}, "an MBean object name, e.g. lbmgmt:type=Balancer")
_ANY: dict[str, Any] = {}
OPENRPC: dict[str, Any] = {
    "openrpc": "1.2.6",
    "info": {"title": "lbmgmt management API", "version": API_VERSION,
             "description": "MBeans (JMX model) of an lbmgmt balancer or edge. "
                            "readonly callers may read and poll and invoke INFO operations; "
                            "readwrite callers may also set attributes and invoke ACTION "
                            "operations."},
    "methods": [
        {"name": "queryNames", "summary": "Names of the MBeans matching a JMX pattern",
         "params": [_p("pattern", {"type": "string", "default": "*:*"},
                       "e.g. lbmgmt:type=Server,* or *:*", False)],
         "result": {"name": "names", "schema": {"type": "array", "items": {"type": "string"}}}},
        {"name": "getMBeanInfo", "summary": "Attributes, operations and notifications of an "
                                            "MBean, with what the caller's role may do",
         "params": [_NAME], "result": {"name": "info", "schema": {"type": "object"}}},
        {"name": "getAttribute", "summary": "One attribute's value",
         "params": [_NAME, _p("attribute", {"type": "string"}, "attribute name")],
         "result": {"name": "value", "schema": _ANY}},
        {"name": "getAttributes", "summary": "Several attributes (all readable ones if null)",
         "params": [_NAME, _p("attributes", {"type": ["array", "null"]}, "names", False)],
         "result": {"name": "values", "schema": {"type": "object"}}},
        {"name": "setAttribute", "summary": "Set a writable attribute (readwrite only); "
                                            "returns the new value",
         "params": [_NAME, _p("attribute", {"type": "string"}, "attribute name"),
                    _p("value", _ANY, "new value, of the attribute's type")],
         "result": {"name": "value", "schema": _ANY}},
        {"name": "invoke", "summary": "Invoke an operation (ACTION ones: readwrite only)",
         "params": [_NAME, _p("operation", {"type": "string"}, "operation name"),
                    _p("params", {"type": ["array", "object", "null"]},
                       "arguments by position or by name", False)],
         "result": {"name": "result", "schema": _ANY}},
        {"name": "pollNotifications",
         "summary": "Long-poll: notifications after a sequence number",
         "params": [_p("since", {"type": ["integer", "null"]},
                       "last sequence seen; null: only new ones", False),
                    _p("timeout", {"type": "number", "maximum": MAX_POLL_TIMEOUT},
                       "seconds to wait when there is none yet", False),
                    _p("types", {"type": ["array", "null"]}, "only these types", False),
                    _p("epoch", {"type": ["string", "null"]},
                       "the epoch the last answer carried: a since from another one "
                       "(the daemon restarted) starts again from the oldest buffered", False)],
         "result": {"name": "batch", "schema": {
             "type": "object", "properties": {
                 "notifications": {"type": "array"}, "next": {"type": "integer"},
                 "lost": {"type": "integer"}, "epoch": {"type": "string"},
                 "reset": {"type": "boolean"}}}}},
        {"name": "version", "summary": "Product, API version, daemon role, caller's role",
         "params": [], "result": {"name": "version", "schema": {"type": "object"}}},
        {"name": "rpc.discover", "summary": "This document", "params": [],
         "result": {"name": "openrpc", "schema": {"type": "object"}}},
    ],
    "components": {"errors": {title.replace(" ", ""): {"code": code, "message": title,
                                                       "data": description}
                              for code, title, description in ERROR_TABLE}},
}
