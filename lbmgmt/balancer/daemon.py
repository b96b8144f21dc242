"""The balancer daemon: the I/O shell around ``BalancerCore``.

It owns what the core must not: the UDP report socket, the tasks (the sweep),
signals and the clocks, and it starts the client port (``ClientPort``: HTTP and
RTMP) and the management port. Every datagram is handed to the core with the
time; the fronts and the MBeans are built on the core, never on this object.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

from lbmgmt.balancer.config import BalancerConfig
from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.front.protocol import ClientPort
from lbmgmt.balancer.mbeans import BalancerBeans
from lbmgmt.balancer.routing import Routing
from lbmgmt.balancer.rtmp import RtmpService
from lbmgmt.balancer.state import StateFileError, StateKeeping, restore, state_steps
from lbmgmt.atomicfile import write_atomically
from lbmgmt.steps import finish, finish_between_turns
from lbmgmt.throttle import Throttle
from lbmgmt.clocks import Clocks
from lbmgmt.endpoints import Endpoint, binding, format_address
from lbmgmt.httpserve import stop_step
from lbmgmt.logs import fields
from lbmgmt.management.http import ManagementServer
from lbmgmt.management.notifications import NotificationBuffer
from lbmgmt.management.server import MBeanServer

log = logging.getLogger("lbmgmt.balancer")

UDP_RCVBUF = 4 * 1024 * 1024  # absorbs a burst of reports from a large fleet
# Linux's SO_MEMINFO: a socket's memory figures, the ninth its drops (sock_diag.h).
SO_MEMINFO: int | None = getattr(socket, "SO_MEMINFO", 55 if sys.platform == "linux" else None)
MEMINFO = struct.Struct("9I")
MEMINFO_SIZE = MEMINFO.size
MEMINFO_DROPS = 8
# After this many senders are forgotten (and at most once per TRIM_INTERVAL), what the
# C allocator holds free goes back to the system: a fleet that came and went must not
# leave the balancer's resident size at its peak.
TRIM_AFTER_FORGOTTEN = 1000
TRIM_INTERVAL = 60.0
STATE_SAVE_INTERVAL = 1.0  # seconds between two saves of the state file, at most
STATE_WARN_INTERVAL = 60.0  # seconds between two warnings that it cannot be saved


@functools.cache
def _libc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    return trim


def release_free_memory() -> None:
    """Hand the C allocator's free pages back to the system (glibc's malloc_trim): freed
    objects of C libraries (a cipher per sender) otherwise keep the peak resident."""
    trim = _libc_trim()
    if trim is not None:
        trim(0)


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
                                            source=addr[:2])

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
        self._geoip: Any = None  # the GeoIP database's reader, if [routing] names one
        self.core = BalancerCore(config.key, timeout=config.message_timeout_ms / 1000,
                                 grace=config.grace_ms / 1000,
                                 missed_reports=config.missed_reports,
                                 max_silence=config.max_silence_ms / 1000,
                                 max_clock_skew=config.max_clock_skew_ms / 1000,
                                 redirector=config.redirector,
                                 routing=Routing(config.routing, self._open_geoip()),
                                 affinity=config.affinity,
                                 balance_factor=config.balance_factor,
                                 affinity_floor=config.affinity_floor,
                                 peers=config.peers)
        self.udp_address: tuple[str, int] | None = None
        self.http_address: tuple[str, int] | None = None
        self.rtmp_address: tuple[str, int] | None = None
        self.client_addresses: list[tuple[str, int]] = []  # every client port, first: http
        self.rtsp_addresses: list[tuple[str, int]] = []  # RTSP's own ports, if any
        self._transport: asyncio.DatagramTransport | None = None
        self._status: _StatusProtocol | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._live = False  # started (even in part) and not stopped since
        self._stop_lock = asyncio.Lock()
        self.rtmp = RtmpService(self.core, config.rtmp, self.clocks)
        self.clients = ClientPort(self.core, config.http, config.clients, self.rtmp, self.clocks,
                                  rtsp=config.rtsp, webrtc=config.webrtc)
        mgmt = config.management
        self.mbeans = MBeanServer(NotificationBuffer(mgmt.notification_buffer if mgmt else 1000),
                                  clock=self.clocks.wall)
        self.state = StateKeeping(None if config.state_file is None
                                  else str(config.state_file))
        self._state_saver: asyncio.Task[None] | None = None
        self._state_warnings = Throttle(STATE_WARN_INTERVAL)
        self._state_lock = threading.Lock()
        self._state_packed = self._state_written = 0
        self._forgotten_at_trim = 0
        self._trim: asyncio.Future[None] | None = None  # (a trim in a thread: it may take ms)
        self._trimmed_at = float("-inf")
        self.beans = BalancerBeans(self.core, self.clocks, self.mbeans, state=self.state)
        self.management: ManagementServer | None = (
            ManagementServer(mgmt, self.mbeans, daemon="balancer")
            if mgmt is not None and mgmt.enabled else None)

    def _open_geoip(self) -> Callable[[str], Any] | None:
        """The GeoIP database's lookup (kept in memory: no disk read per client)."""
        path = self.config.routing.geoip_database
        if path is None:
            return None
        import maxminddb
        self._geoip = maxminddb.open_database(path, maxminddb.MODE_MEMORY)
        lookup: Callable[[str], Any] = self._geoip.get
        return lookup

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        """Bind every port; on any failure close what was bound, then re-raise."""
        loop = asyncio.get_running_loop()
        self._live = True
        try:
            self._load_state()
            with binding("UDP (edge reports)", self.config.listen, "[balancer] listen"):
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
                with binding("TCP (management)", self.management.config.listen,
                             "[management] listen"):
                    await self.management.start()
        except BaseException as exc:
            log.debug("balancer start failed; closing what was started",
                      extra=fields(error=str(exc) or type(exc).__name__))
            await self.stop()
            raise
        self._sweeper = asyncio.create_task(self._sweep(), name="balancer-sweep")
        if self.config.state_file is not None:
            self._state_saver = asyncio.create_task(self._keep_state(),
                                                    name="balancer-state-file")
        addresses = self.core.addresses
        addresses["udp"] = format_address(self.udp_address)
        addresses["http"] = ", ".join(format_address(a) for a in self.client_addresses)
        if self.rtmp_address is not None:
            addresses["rtmp"] = format_address(self.rtmp_address)
        if self.config.rtsp.enabled:
            addresses["rtsp"] = ", ".join(format_address(a) for a in
                                          self.rtsp_addresses or self.client_addresses)
        if self.config.key.is_placeholder:
            log.warning("the shared key is the examples' placeholder: anyone can forge "
                        "reports to this balancer; put one from 'lbmgmt new-key' in its "
                        "config and its edges' targets files")
        log.info("balancer started", extra=fields(
            udp=addresses["udp"], http=addresses["http"], rtmp=addresses.get("rtmp", "off"),
            rtsp=addresses.get("rtsp", "off"),
            management=self.management.url if self.management else "off",
            redirector=self.core.redirector.name))

    async def _start_clients(self) -> None:
        """The client ports: HTTP, RTMP and RTSP on each of ``[http] listen`` (each
        connection's first bytes say which, as on the original system), or RTMP or RTSP
        on ports of their own."""
        rtmp, rtsp = self.config.rtmp, self.config.rtsp
        shared = rtmp.enabled and rtmp.listen is None
        rtsp_shared = rtsp.enabled and not rtsp.listen
        for endpoint in self.config.http.listen:
            with binding("TCP (clients)", endpoint, "[http] listen"):
                self.client_addresses.append(await self.clients.listen(
                    endpoint, http=True, rtmp=shared, rtsp=rtsp_shared))
        self.http_address = self.client_addresses[0]
        if shared:
            self.rtmp_address = self.http_address
        elif rtmp.enabled and rtmp.listen is not None:
            with binding("TCP (RTMP)", rtmp.listen, "[rtmp] listen"):
                self.rtmp_address = await self.clients.listen(rtmp.listen, http=False,
                                                              rtmp=True)
        if rtsp.enabled:
            for endpoint in rtsp.listen:
                with binding("TCP (RTSP)", endpoint, "[rtsp] listen"):
                    self.rtsp_addresses.append(await self.clients.listen(
                        endpoint, http=False, rtmp=False, rtsp=True))

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
            saver, self._state_saver = self._state_saver, None
            if saver is not None:
                saver.cancel()
                await stop_step("state file task", asyncio.wait({saver}), log=log)
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
            if saver is not None:  # (started: nothing comes in any more) the last word
                await stop_step("state file: saved", self._save_state(sliced=False), log=log)
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

    def _kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped on the report socket (its buffer full), if it says
        (Linux: SO_MEMINFO)."""
        transport = self._transport
        if transport is None or SO_MEMINFO is None:
            return None
        sock = transport.get_extra_info("socket")
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, MEMINFO_SIZE)
        except OSError:
            return None
        drops: int = MEMINFO.unpack_from(raw)[MEMINFO_DROPS] if len(raw) >= MEMINFO_SIZE else 0
        return drops

    # -- the state file: replay marks and the last pool across restarts ------------
    def _load_state(self) -> None:
        """Take the state file's marks and pool, if there is one this balancer can use;
        one it cannot is said and set aside (never a reason not to start)."""
        path = self.config.state_file
        if path is None:
            return
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            log.info("no state file yet: starting with an empty pool",
                     extra=fields(path=str(path)))
            return
        except OSError as exc:
            self.state.refused = f"cannot read: {exc.strerror or exc}"
        else:
            try:
                restored = restore(self.core, data, now=self.clocks.monotonic(),
                                   wall=self.clocks.wall())
            except StateFileError as exc:
                self.state.refused = str(exc)
            else:
                self.state.restored = restored
                log.info("state file taken", extra=fields(
                    path=str(path), servers=restored.servers, too_old=restored.too_old,
                    replay_marks=restored.marks,
                    age_ms=round((self.clocks.wall() - restored.saved_at) * 1000)))
                return
        log.warning("state file not taken: starting with an empty pool and no replay marks "
                    "(reports captured before the restart may be taken again)",
                    extra=fields(path=str(path), reason=self.state.refused))

    async def _keep_state(self) -> None:
        """Save the state file at most once a second, when something it keeps changed
        (and a second after start, whatever: a file that cannot be written is said then)."""
        saved = -1
        while True:
            await asyncio.sleep(STATE_SAVE_INTERVAL)
            revision = self.core.revision
            if revision != saved:
                try:
                    await self._save_state(sliced=True)
                except Exception:  # a bug must not end the saves; it stays visible
                    log.exception("state file save failed; going on")
                saved = revision

    async def _save_state(self, *, sliced: bool) -> None:
        """Pack the state (a slice per loop turn while serving, at once at stop) and write
        it atomically off the loop; a failure is counted and said."""
        clocks = self.clocks
        now, wall = clocks.monotonic(), clocks.wall()
        revision = self.core.revision
        steps = state_steps(self.core, now=now, wall=wall)
        data = await finish_between_turns(steps) if sliced else finish(steps)
        self._state_packed += 1
        try:
            await asyncio.to_thread(self._write_state, data, self._state_packed)
        except OSError as exc:
            self.state.failed += 1
            self.state.last_error = exc.strerror or str(exc)
            held_back = self._state_warnings.allow("save", clocks.monotonic())
            if held_back is not None:
                log.warning("state file not saved: a restart would forget the pool and "
                            "the replay marks", extra=fields(
                                path=str(self.config.state_file),
                                error=self.state.last_error,
                                held_back=held_back))
            return
        self.state.saved += 1
        self.state.last_saved_at = wall
        self.state.saved_revision = revision
        self.state.last_error = None

    def _write_state(self, data: bytes, packed: int) -> None:
        """(In a thread.) A save cancelled half way (a stop) may still be writing when
        the last one comes: whichever was packed later stays on disk."""
        path = self.config.state_file
        assert path is not None
        with self._state_lock:
            if packed > self._state_written:
                # (the state directory may not exist yet: made private, as systemd would)
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                write_atomically(path, data)
                self._state_written = packed

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.core.sweep_interval)
            try:
                self.sweep()
            except Exception:  # one bad listener or plugin must not end the sweep
                log.exception("sweep failed; going on")

    def sweep(self) -> None:
        """One round of the sweep (a few times a second): silent edges out, notifications
        of what happened, and memory back to the system after many senders went."""
        core, clocks = self.core, self.clocks
        now = clocks.monotonic()
        core.handle_timer(now=now, wall=clocks.wall(), kernel_drops=self._kernel_drops())
        self.beans.tick(now)
        if (core.forgotten - self._forgotten_at_trim >= TRIM_AFTER_FORGOTTEN
                and now - self._trimmed_at >= TRIM_INTERVAL):
            self._forgotten_at_trim, self._trimmed_at = core.forgotten, now
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # (driven by hand, as bench.churn does)
                release_free_memory()
            else:
                self._trim = loop.run_in_executor(None, release_free_memory)

