"""The balancer daemon: asyncio glue around receiver, registry, redirector, HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable

from aiohttp import web

from lbmgmt.balancer.config import BalancerConfig
from lbmgmt.balancer.http import make_http_app
from lbmgmt.balancer.mbeans import BalancerBeans
from lbmgmt.balancer.redirectors import Redirector, redirector_class
from lbmgmt.balancer.rtmp import RtmpService
from lbmgmt.balancer.registry import (RegistryEvent, ServerEntry, ServerJoined, ServerLeft,
                                      ServerRegistry, ServerStateChanged)
from lbmgmt.balancer.serverinfo import render_server_info
from lbmgmt.endpoints import Endpoint
from lbmgmt.httpserve import app_runner, close_runner, serve_app, stop_listening, stop_step
from lbmgmt.logs import fields
from lbmgmt.management.http import ManagementServer
from lbmgmt.management.notifications import NotificationBuffer
from lbmgmt.management.server import MBeanServer
from lbmgmt.status import ReportAccepted, ReportReceiver

log = logging.getLogger("lbmgmt.balancer")

UDP_RCVBUF = 4 * 1024 * 1024  # absorbs a burst of reports from a large fleet


class _StatusProtocol(asyncio.DatagramProtocol):
    def __init__(self, balancer: BalancerDaemon) -> None:
        self.balancer = balancer
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.balancer.handle_datagram(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error", extra=fields(error=str(exc)))


def bind_udp(endpoint: Endpoint) -> socket.socket:
    """A UDP socket for ``endpoint``; '*' is dual-stack where the host has IPv6."""
    if endpoint.host:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
    else:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            addr = ("::", endpoint.port)
        except OSError:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            addr = ("0.0.0.0", endpoint.port)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        sock.bind(addr)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class BalancerDaemon:
    """A balancer you can start in-process (tests do) or from ``lbmgmt balancer``.

    ``clock`` is the wall clock (report timestamps), ``monotonic`` the clock
    for timeouts; both are injectable so tests can drive time.
    """

    def __init__(self, config: BalancerConfig, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        self.registry = ServerRegistry(timeout=config.message_timeout_ms / 1000,
                                       grace=config.grace_ms / 1000)
        self.receiver = ReportReceiver(config.key, max_age=config.max_clock_skew_ms / 1000)
        self.redirector: Redirector = redirector_class(config.redirector)()
        self.redirector.attach(self.registry)
        self.redirects_served: Counter[str] = Counter(http=0, rtmp=0)
        self.listeners: list[Callable[[RegistryEvent], None]] = []
        self.udp_address: tuple[str, int] | None = None
        self.http_address: tuple[str, int] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._status: _StatusProtocol | None = None
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._live = False  # started (even in part) and not stopped since
        self._stop_lock = asyncio.Lock()
        self.rtmp = RtmpService(self, config.rtmp)
        mgmt = config.management
        self.mbeans = MBeanServer(NotificationBuffer(mgmt.notification_buffer if mgmt else 1000),
                                  clock=clock)
        self.beans = BalancerBeans(self, self.mbeans)
        self.management: ManagementServer | None = (
            ManagementServer(mgmt, self.mbeans, daemon="balancer")
            if mgmt is not None and mgmt.enabled else None)

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Bind every port; on any failure close what was bound, then re-raise."""
        loop = asyncio.get_running_loop()
        self._live = True
        try:
            sock = bind_udp(self.config.listen)
            try:
                self._transport, self._status = await loop.create_datagram_endpoint(
                    lambda: _StatusProtocol(self), sock=sock)
            except BaseException:
                sock.close()
                raise
            self.udp_address = sock.getsockname()[:2]
            await self._start_http()
            if self.management is not None:
                await self.management.start()
        except BaseException as exc:
            log.debug("balancer start failed; closing what was started",
                      extra=fields(error=str(exc) or type(exc).__name__))
            await self.stop()
            raise
        self._sweeper = asyncio.create_task(self._sweep(), name="balancer-sweep")
        log.info("balancer started", extra=fields(
            udp=self.format_address(self.udp_address),
            http=self.format_address(self.http_address),
            rtmp=("off" if not self.config.rtmp.enabled else
                  self.format_address(self.rtmp.address)),
            management=self.management.url if self.management else "off",
            redirector=self.redirector.name))

    async def _start_http(self) -> None:
        rtmp = self.config.rtmp
        if rtmp.enabled and rtmp.listen is None:
            # One port for both, as on the original system: RtmpService sniffs each
            # connection's first byte and hands HTTP ones to this aiohttp runner.
            self._runner = await app_runner(make_http_app(self))
            await self.rtmp.start(self.config.http.listen, http=self._runner)
            self.http_address = self.rtmp.address
            return
        self._runner, self.http_address = await serve_app(make_http_app(self),
                                                          self.config.http.listen)
        if rtmp.enabled and rtmp.listen is not None:
            await self.rtmp.start(rtmp.listen)

    async def stop(self) -> None:
        """Close every port and connection; each step bounded, so this always returns.

        Listeners first (nothing new comes in), then every open connection (RTMP
        sessions and proxy relays, connections that never sent a byte, HTTP
        keep-alive ones), the management port, and only then the wait for the
        RTMP listener to close, which on Python 3.12.1+ waits for every connection
        it accepted. Safe to call twice, and after a start that failed half way.
        """
        async with self._stop_lock:
            if not self._live:
                return
            self._live = False
            sweeper, self._sweeper = self._sweeper, None
            if sweeper is not None:
                sweeper.cancel()
                await stop_step("sweep task", asyncio.wait({sweeper}), log=log)
            # 1. no new reports, connections or requests
            transport, self._transport = self._transport, None
            if transport is not None:
                transport.close()  # the socket itself closes on the next loop pass
            self.rtmp.close()
            runner, self._runner = self._runner, None
            if runner is not None:
                await stop_listening(runner, log=log, name="http")
            # 2. every open connection: RTMP (silent, sessions, relays), then HTTP
            self.rtmp.close_connections()
            await stop_step("rtmp: end proxy relays", self.rtmp.wait_relays(), log=log)
            if runner is not None:
                await close_runner(runner, log=log, name="http")
            if self.management is not None:
                await stop_step("management port", self.management.stop(), log=log, steps=3)
            # 3. nothing is left open for it to wait for
            await stop_step("rtmp: listener closed", self.rtmp.wait_closed(), log=log)
            status, self._status = self._status, None
            if status is not None:
                await stop_step("udp: socket closed", asyncio.shield(status.closed), log=log)
            log.info("balancer stopped")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await self.start()
        try:
            await done.wait()
        finally:
            await self.stop()

    @staticmethod
    def format_address(addr: tuple[str, int] | None) -> str:
        if addr is None:
            return "-"
        host, port = addr
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # -- the report path -----------------------------------------------------
    def handle_datagram(self, data: bytes) -> None:
        event = self.receiver.receive(data, self.clock())
        if isinstance(event, ReportAccepted):
            self._emit(self.registry.apply(event, self.monotonic()))

    def _emit(self, events: list[RegistryEvent]) -> None:
        for event in events:
            if isinstance(event, ServerJoined):
                log.info("server joined", extra=fields(guid=str(event.server.guid),
                                                       address=event.server.address))
            elif isinstance(event, ServerLeft):
                log.info("server left", extra=fields(guid=str(event.server.guid),
                                                     reason=str(event.reason)))
            elif isinstance(event, ServerStateChanged):
                log.info("server state", extra=fields(guid=str(event.server.guid),
                                                      state=event.new.name))
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("registry listener failed")

    async def _sweep(self) -> None:
        period = min(0.25, self.registry.timeout / 10)
        while True:
            await asyncio.sleep(period)
            now = self.monotonic()
            self._emit(self.registry.expire(now))
            self.receiver.prune(self.clock())
            self.beans.tick(now)

    # -- the redirect path ---------------------------------------------------
    def redirect(self, protocol: str) -> ServerEntry | None:
        """The edge for one new client, counted against that edge and ``protocol``."""
        entry = self.redirector.redirect(self.registry, self.monotonic())
        if entry is not None:
            self.redirects_served[protocol] += 1
        return entry

    def drain(self, guid: uuid.UUID, drained: bool = True) -> None:
        """Balancer-side drain; KeyError for an unknown GUID."""
        self._emit(self.registry.set_drained(guid, drained))

    def remove(self, guid: uuid.UUID) -> None:
        events = self.registry.remove(guid)
        if not events:
            raise KeyError(f"no server {guid}")
        self._emit(events)

    def set_redirector(self, spec: str) -> None:
        """Switch strategy live; the new one builds its index from the registry."""
        new = redirector_class(spec)()
        new.attach(self.registry)
        self.redirector.detach()
        self.redirector = new
        self.config.redirector = spec

    def server_info_xml(self) -> bytes:
        return render_server_info(self.registry, self.monotonic(),
                                  redirector=self.redirector.name,
                                  accepted=self.receiver.accepted,
                                  drops=self.receiver.drops)
