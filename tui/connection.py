"""One attached daemon: its client, what we last saw of it, and whether it is there.

Kept apart from the widgets so that the retry and polling logic is plain
asyncio: ``run()`` polls until cancelled, reconnecting with backoff when the
daemon goes away; ``follow_notifications()`` long-polls. Both report through
callbacks, and neither ever blocks the interface.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lbmgmt.management.client import AuthFailed, ManagementClient, ManagementUnavailable, RpcError
from tui.history import History

BALANCER = "lbmgmt:type=Balancer"
SENDER = "lbmgmt:type=Sender"
RUNTIME = "lbmgmt:type=Runtime"
BACKOFF_START, BACKOFF_MAX = 0.5, 10.0
POLL_WAIT = 20.0


class LinkState(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    LOST = "lost"
    REFUSED = "login refused"


@dataclass(slots=True)
class ManagementTarget:
    address: str
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls: bool = False
    cafile: str | None = None
    insecure: bool = False

    def client(self) -> ManagementClient:
        return ManagementClient(self.address, user=self.user, password=self.password,
                                token=self.token, tls=self.tls, cafile=self.cafile,
                                insecure=self.insecure, timeout=POLL_WAIT + 10)


@dataclass(slots=True)
class Connection:
    target: ManagementTarget
    on_change: Callable[[Connection], None] = lambda c: None
    on_notifications: Callable[[Connection, list[dict[str, Any]]], None] = lambda c, n: None
    clock: Callable[[], float] = time.monotonic
    state: LinkState = LinkState.CONNECTING
    error: str = ""
    retry_at: float | None = None
    daemon: str = ""  # "balancer" or "edge"
    role: str = ""  # "readonly" or "readwrite"
    user: str | None = None
    overview: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)  # lbmgmt:type=Runtime's attributes
    answered_at: float | None = None  # clock() at the last refresh that answered
    servers: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)  # listDroppedSenders
    history: History = field(default_factory=History)
    notifications: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=2000))
    interval: float = 1.0
    watched: list[tuple[str, str]] = field(default_factory=list)  # charted (mbean, attribute)
    client: ManagementClient | None = None

    @property
    def address(self) -> str:
        return self.target.address

    @property
    def readonly(self) -> bool:
        return self.role != "readwrite"

    def _client(self) -> ManagementClient:
        if self.client is None:  # made again after a loss: the old one may hold dead sockets
            self.client = self.target.client()
        return self.client

    async def call(self, method: str, params: Any = None, *, timeout: float | None = None
                   ) -> Any:
        """One call now (from an action); RpcError and ManagementUnavailable propagate."""
        return await self._client().call(method, params, timeout=timeout)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    # -- polling --------------------------------------------------------------------
    async def run(self) -> None:
        """Poll every ``interval``; on loss, retry with backoff; stop on a refused login."""
        backoff = BACKOFF_START
        while True:
            try:
                if self.state is not LinkState.CONNECTED:
                    version = await self.call("version")
                    self.daemon, self.role = version["daemon"], version["role"]
                    self.user = version.get("user")
                await self.refresh()
                self.answered_at = self.clock()
                self.state, self.error, self.retry_at = LinkState.CONNECTED, "", None
                backoff = BACKOFF_START
                self.on_change(self)
                await asyncio.sleep(self.interval)
            except AuthFailed as exc:
                self.state, self.error = LinkState.REFUSED, str(exc)
                self.on_change(self)
                return  # retrying a refused login only locks the account out
            except (ManagementUnavailable, RpcError) as exc:
                self.state, self.error = LinkState.LOST, str(exc)
                self.retry_at = self.clock() + backoff
                self.on_change(self)
                await self.close()  # a fresh session: the old one may hold dead sockets
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def refresh(self) -> None:
        now = self.clock()
        calls: list[tuple[str, Any]]
        if self.daemon == "balancer":
            calls = [("getAttributes", [BALANCER, None]), ("invoke", [BALANCER, "listServers", []]),
                     ("invoke", [BALANCER, "listDroppedSenders", []])]
        else:
            calls = [("getAttributes", [SENDER, None])]
        calls.append(("getAttributes", [RUNTIME, None]))
        calls += [("getAttribute", [name, attr]) for name, attr in self.watched]
        results = await self._client().batch(calls)
        for result in results:
            if isinstance(result, RpcError) and result.code < -32600:  # protocol-level
                raise result
        self.overview = results[0] if isinstance(results[0], dict) else {}
        rest = results[1:]
        if self.daemon == "balancer":
            self.servers = rest[0] if isinstance(rest[0], list) else []
            self.dropped = rest[1] if isinstance(rest[1], list) else []  # (an older balancer)
            rest = rest[2:]
            self._record_balancer(now)
        else:
            self.servers, self.dropped = [], []
            if isinstance(self.overview.get("Load"), int | float):
                self.history.add("load", now, self.overview["Load"])
            if isinstance(self.overview.get("ReportsSent"), int | float):
                self.history.add("reports_sent", now, self.overview["ReportsSent"])
        self.runtime = rest[0] if isinstance(rest[0], dict) else {}  # (an older daemon: {})
        rest = rest[1:]
        self._record_runtime(now)
        for (name, attr), value in zip(self.watched, rest, strict=True):
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.history.add(f"chart:{name}:{attr}", now, value)

    def dropped_outside(self, within: float = 60.0) -> int:
        """Senders whose reports the balancer dropped in the last minute and that are not
        in its pool (a wrong key, a skewed clock): edges that never join."""
        present = {s.get("guid") for s in self.servers}
        return sum(1 for d in self.dropped
                   if d.get("guid") not in present and (d.get("lastSecondsAgo") or 0) <= within)

    def _record_runtime(self, now: float) -> None:
        r = self.runtime
        for key, value in (("cpu", r.get("CpuPercent")), ("rss", r.get("Rss")),
                           ("lag", (r.get("LoopLag") or {}).get("p99")),
                           ("tasks", r.get("Tasks"))):
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.history.add(f"runtime:{key}", now, value)

    def _record_balancer(self, now: float) -> None:
        o = self.overview
        served = o.get("RedirectsServed") or {}
        self.history.add("redirects", now, sum(served.values()))
        self.history.add("reports", now, o.get("ReportsReceived", 0))
        self.history.add("drops", now, sum((o.get("ReportsDropped") or {}).values()))
        keys = set()
        for server in self.servers:
            key = f"load:{server['guid']}"
            keys.add(key)
            self.history.add(key, now, server.get("load") or 0)
        self.history.keep_only(keys, "load:")

    async def follow_notifications(self) -> None:
        # Kept across reconnections: the same daemon answers what was missed meanwhile,
        # a restarted one (another epoch) everything it still has, saying so.
        since: int | None = None
        epoch: str | None = None
        backoff = BACKOFF_START
        while True:
            if self.state is not LinkState.CONNECTED:
                await asyncio.sleep(0.2)
                continue
            try:
                batch = await self.call("pollNotifications", [since, POLL_WAIT, None, epoch],
                                        timeout=POLL_WAIT + 10)
            except (ManagementUnavailable, RpcError):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_START
            since, epoch = batch["next"], batch.get("epoch")
            items = batch["notifications"]
            if batch.get("reset"):
                items = [{"type": "lb-console.restarted", "sequence": 0,
                          "timestamp": time.time(), "source": "",
                          "message": "the daemon restarted: its notifications since",
                          "data": None}, *items]
            if batch.get("lost"):
                items = [{"type": "lb-console.lost", "sequence": since, "timestamp": time.time(),
                          "source": "", "message": f"{batch['lost']} notifications lost",
                          "data": None}, *items]
            if items:
                self.notifications.extend(items)
                self.on_notifications(self, items)
