"""The balancer daemon: the I/O shell around ``BalancerCore``.

It owns what the core must not: the UDP report socket, the tasks (the sweep),
signals and the clocks, and it starts the client port (``ClientPort``: HTTP and
RTMP) and the management port. Every datagram is handed to the core with the
time; the fronts and the MBeans are built on the core, never on this object.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket

from lbmgmt.balancer.config import BalancerConfig
from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.front.protocol import ClientPort
from lbmgmt.balancer.mbeans import BalancerBeans
from lbmgmt.balancer.rtmp import RtmpService
from lbmgmt.clocks import Clocks
from lbmgmt.endpoints import Endpoint, format_address, join_host_port
from lbmgmt.httpserve import stop_step
from lbmgmt.logs import fields
from lbmgmt.management.http import ManagementServer
from lbmgmt.management.notifications import NotificationBuffer
from lbmgmt.management.server import MBeanServer

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
        clocks = self.balancer.clocks
        self.balancer.core.receive_datagram(data, now=clocks.monotonic(), wall=clocks.wall(),
                                            source=join_host_port(str(addr[0]), addr[1]))

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

    ``clocks`` (wall and monotonic) are injectable so tests can drive time.
    """

    def __init__(self, config: BalancerConfig, *, clocks: Clocks | None = None) -> None:
        self.config = config
        self.clocks = clocks or Clocks()
        self.core = BalancerCore(config.key, timeout=config.message_timeout_ms / 1000,
                                 grace=config.grace_ms / 1000,
                                 missed_reports=config.missed_reports,
                                 max_silence=config.max_silence_ms / 1000,
                                 max_clock_skew=config.max_clock_skew_ms / 1000,
                                 redirector=config.redirector)
        self.udp_address: tuple[str, int] | None = None
        self.http_address: tuple[str, int] | None = None
        self.rtmp_address: tuple[str, int] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._status: _StatusProtocol | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._live = False  # started (even in part) and not stopped since
        self._stop_lock = asyncio.Lock()
        self.rtmp = RtmpService(self.core, config.rtmp, self.clocks)
        self.clients = ClientPort(self.core, config.http, config.clients, self.rtmp, self.clocks)
        mgmt = config.management
        self.mbeans = MBeanServer(NotificationBuffer(mgmt.notification_buffer if mgmt else 1000),
                                  clock=self.clocks.wall)
        self.beans = BalancerBeans(self.core, self.clocks, self.mbeans)
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
            await self._start_clients()
            if self.management is not None:
                await self.management.start()
        except BaseException as exc:
            log.debug("balancer start failed; closing what was started",
                      extra=fields(error=str(exc) or type(exc).__name__))
            await self.stop()
            raise
        self._sweeper = asyncio.create_task(self._sweep(), name="balancer-sweep")
        addresses = self.core.addresses
        addresses["udp"] = format_address(self.udp_address)
        addresses["http"] = format_address(self.http_address)
        if self.rtmp_address is not None:
            addresses["rtmp"] = format_address(self.rtmp_address)
        log.info("balancer started", extra=fields(
            udp=addresses["udp"], http=addresses["http"], rtmp=addresses.get("rtmp", "off"),
            management=self.management.url if self.management else "off",
            redirector=self.core.redirector.name))

    async def _start_clients(self) -> None:
        """The client port: HTTP and RTMP on one port (each connection's first byte says
        which, as on the original system), or RTMP on a port of its own."""
        rtmp = self.config.rtmp
        shared = rtmp.enabled and rtmp.listen is None
        self.http_address = await self.clients.listen(self.config.http.listen, http=True,
                                                      rtmp=shared)
        if shared:
            self.rtmp_address = self.http_address
        elif rtmp.enabled and rtmp.listen is not None:
            self.rtmp_address = await self.clients.listen(rtmp.listen, http=False, rtmp=True)

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
            self.clients.close()
            # 2. every open connection: HTTP, silent ones, RTMP sessions and relays
            self.clients.close_connections()
            await stop_step("rtmp: end proxy relays", self.rtmp.wait_relays(), log=log)
            if self.management is not None:
                await stop_step("management port", self.management.stop(), log=log, steps=3)
            # 3. nothing is left open for them to wait for
            await stop_step("client port: listeners closed", self.clients.wait_closed(),
                            log=log)
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
        # What start-up made (modules, config, MBeans) lives as long as the process: the
        # garbage collector need not walk it again in every full collection, which
        # holds the loop for as long as the walk takes (milliseconds per 10 000 objects).
        gc.freeze()
        try:
            await done.wait()
        finally:
            await self.stop()

    async def _sweep(self) -> None:
        core, clocks = self.core, self.clocks
        while True:
            await asyncio.sleep(core.sweep_interval)
            try:
                now = clocks.monotonic()
                core.handle_timer(now=now, wall=clocks.wall())
                self.beans.tick(now)
            except Exception:  # one bad listener or plugin must not end the sweep
                log.exception("sweep failed; going on")

