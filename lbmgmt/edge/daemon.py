"""The edge daemon: asyncio glue around the monitor and the report sealer.

Each balancer gets its own connected UDP socket, so an unreachable balancer
shows up as an error on that target alone (ICMP port-unreachable comes back
as ECONNREFUSED on a connected socket) and never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from lbmgmt import __version__
from lbmgmt.configfile import ConfigError
from lbmgmt.endpoints import binding
from lbmgmt.edge.bandwidth import InterfaceBandwidth
from lbmgmt.edge.config import LOAD_SAMPLE, MESSAGE_INTERVAL, EdgeConfig
from lbmgmt.edge.identity import load_or_create_guid
from lbmgmt.edge.mbeans import SenderBeans
from lbmgmt.edge.monitors import LoadMonitor, MonitorError
from lbmgmt.edge.targets import ReportTarget, load_targets
from lbmgmt.logs import fields
from lbmgmt.management.notifications import NotificationBuffer
from lbmgmt.management.server import MBeanServer
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey
from lbmgmt.status.wire import fit
from lbmgmt.streams import MAX_NAME_BYTES, stream_key
from lbmgmt.throttle import Throttle

log = logging.getLogger("lbmgmt.edge")

AGENT = f"lbmgmt/{__version__}"  # what reports say the sender is (the "agent" extension)
RESOLVE_TIMEOUT = 2.0
MONITOR_TIMEOUT = 5.0
STOP_GRACE = 0.5
# The stopping report goes out this many times, this far apart: the balancer takes the
# first and ignores the rest, and one lost datagram does not leave the edge in the pool
# until it times out (it may not send again).
STOP_COPIES = 3
STOP_COPY_GAP = 0.02
# A load change between reports is reported at once (several balancers then see a crowd
# land on this edge within a sample, not an interval) if it is at least this big...
MOVE_ABSOLUTE = 1.0
MOVE_RELATIVE = 0.10
QUICK_REPORT_GAP = 0.1  # ... and no sooner than this after the last report
# Between reports the load is sampled; this many failed reads in a row take the edge out
# (one read only, when it is read at each report alone).
FAILED_SAMPLES = 2
RECOVER_AFTER = 3  # sends in a row with no error: a failing target is said to be back


@dataclass(slots=True)
class TargetLink:
    """One balancer the edge reports to, with what happened to the last send."""

    target: ReportTarget
    transport: asyncio.DatagramTransport | None = None
    reports_sent: int = 0
    send_errors: int = 0
    last_result: str = "not sent yet"
    last_send_at: float | None = None
    # Failing from an error until RECOVER_AFTER sends in a row met none: what is said
    # (a warning as it starts, info as it ends), not each error (UDP's errors come back
    # after a send that looked fine: "ok" and "error" alternate while a balancer is down).
    failing: bool = False
    clean_sends: int = 0
    pending: bytes | None = field(default=None, repr=False)
    _connecting: asyncio.Task[None] | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def drop(self) -> None:
        """Done with this target: its socket closed and a connect still under way cancelled."""
        if self._connecting is not None:
            self._connecting.cancel()
        self.close()


class ManagementPort(Protocol):
    """What the edge and its callers use of lbmgmt.management.http's ManagementServer, which
    start() imports after the first report (its stack is most of an edge's start-up)."""

    address: tuple[str, int] | None

    @property
    def address_text(self) -> str: ...
    @property
    def url(self) -> str: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class _TargetProtocol(asyncio.DatagramProtocol):
    def __init__(self, link: TargetLink, failed: Callable[[TargetLink, str], None]) -> None:
        self.link = link
        self.failed = failed

    def error_received(self, exc: Exception) -> None:
        # (an ICMP error for an earlier datagram: the balancer's port is closed, its
        # host unreachable)
        self.failed(self.link, (exc.strerror if isinstance(exc, OSError) else None)
                    or str(exc))
        # A fresh socket (and a fresh DNS answer) on the next send.
        self.link.close()

    def connection_lost(self, exc: Exception | None) -> None:
        return None


class EdgeDaemon:
    """An edge sender you can start in-process (tests do) or from ``lbmgmt edge``.

    ``clock`` is the wall clock (report timestamps), ``monotonic`` the one intervals and
    the drain's deadline are measured on: tests pass their own to drive time.
    """

    def __init__(self, config: EdgeConfig, *, targets: list[ReportTarget] | None = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.monitor: LoadMonitor = config.monitor
        self.clock = clock
        self.monotonic = monotonic
        self.guid: uuid.UUID = load_or_create_guid(config.guid_file)
        self.state = EdgeState.RUNNING
        self.load = 0.0
        self.load_error: str | None = None
        # The streams the monitor said the media server carries (None: it cannot tell),
        # and of them, those the last report carried and how many it left out.
        self.streams: list[str] | None = None
        self.streams_reported: list[str] = []
        self.streams_not_sent = 0
        # Draining to stop (drain_on_stop): the monotonic time it stops at the latest.
        self.drain_deadline: float | None = None
        # outbound bits/s, from an interface's counter or the monitor's own figure
        self.bandwidth: float | None = None
        self._interface = (InterfaceBandwidth(config.bandwidth_interface)
                           if config.bandwidth_interface else None)
        # What the last report said (a load move or a health change since is reported at
        # once), and when it went out (monotonic).
        self._reported_load = 0.0
        self._reported_error: str | None = None
        self._reported_at = float("-inf")
        self.quick_reports = 0  # reports sent between intervals for a load move
        self._failed_reads = 0  # monitor reads failed in a row
        self._loop_failures = Throttle(60.0)  # one traceback a minute per kind of failure
        self.reports_sent = 0
        self.send_errors = 0
        self.started_at: float | None = None
        self.links: list[TargetLink] = [TargetLink(t) for t in
                                        (targets if targets is not None
                                         else load_targets(config.targets_file))]
        self._sealer = ReportSealer(self.guid)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()  # serve() stops when it is set
        self._drain_asked = False  # a drain asked for before the report loop ran
        self._read_once = False  # the monitor has answered once (a load to keep)
        self._closed = False
        self._reported = False  # a report went out: the stop must say "stopping"
        self.listeners: list[Callable[[str], None]] = []  # "paused", "unpaused", ...
        mgmt = config.management
        self.mbeans = MBeanServer(NotificationBuffer(mgmt.notification_buffer if mgmt else 1000),
                                  clock=clock)
        SenderBeans(self, self.mbeans)
        self.management: ManagementPort | None = None  # (made by start(), if enabled)
        self._started_mono = monotonic()

    # -- lifecycle -----------------------------------------------------------
    def _warn_placeholder_keys(self) -> None:
        for link in self.links:
            if link.target.key.is_placeholder:
                log.warning("a target's key is the examples' placeholder: anyone can forge "
                            "this edge's reports; put one from 'lbmgmt new-key' in both files",
                            extra=fields(file=str(self.config.targets_file),
                                         line=link.target.line, target=str(link.target)))

    async def start(self) -> None:
        """Send the first report, then open the management port; on failure undo, re-raise.

        The report goes first because the management port's stack (aiohttp, jsonrpcserver)
        takes longer to import than all the rest of an edge's start (bench/startup.py): a
        port that cannot be opened then stops the edge with a stopping report.
        """
        self._warn_placeholder_keys()
        if not self.links:
            log.warning("no targets: this edge reports to no balancer",
                        extra=fields(file=str(self.config.targets_file)))
        try:
            self.started_at = self.clock()
            self._started_mono = self.monotonic()
            self._reported = True
            await self.refresh_and_send()
            # Reporting from now on, while the management port comes up: its stack takes
            # long to import on a busy host, and a silent edge would leave the pool.
            self._task = asyncio.create_task(self._loop(), name="edge-report-loop")
            mgmt = self.config.management
            if mgmt is not None and mgmt.enabled:
                await self._sends_made()  # (the first report out before the port opens)
                # (imported in a thread: the loop goes on reporting meanwhile)
                http = await asyncio.to_thread(importlib.import_module,
                                               "lbmgmt.management.http")
                self.management = http.ManagementServer(mgmt, self.mbeans, daemon="edge")
                with binding("TCP (management)", mgmt.listen, "[management] listen"):
                    await self.management.start()
        except BaseException as exc:
            log.debug("edge start failed; closing what was started",
                      extra=fields(error=str(exc) or type(exc).__name__))
            await self.stop()
            raise
        log.info("edge started", extra=fields(
            guid=str(self.guid), guid_file=str(self.config.guid_file),
            address=self.config.redirect_address,
            targets=len(self.links), monitor=self.monitor.describe(),
            management=self.management.url if self.management else "off"))

    async def _sends_made(self) -> None:
        """Until each target's socket is made (the report sent) or failed, RESOLVE_TIMEOUT
        at most."""
        connecting = {link._connecting for link in self.links
                      if link._connecting is not None and not link._connecting.done()}
        if connecting:
            await asyncio.wait(connecting)

    async def stop(self) -> None:
        """Send a stopping report to every balancer, then close; each step bounded.

        Always returns (a step that hangs is logged and skipped); safe to call
        twice, and after a start that failed half way.
        """
        # (it comes with aiohttp: imported by now if the management port was opened)
        from lbmgmt.httpserve import stop_step

        if self._stopped.is_set():
            return
        self._stopped.set()
        self._stop_requested.set()  # (serve() waits on it)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await stop_step("report loop", asyncio.wait({task}), log=log)
        self.state = EdgeState.STOPPING
        if self._reported:
            await stop_step("stopping report", self._send_stopping(), log=log)
        self._closed = True
        connecting = {link._connecting for link in self.links
                      if link._connecting is not None and not link._connecting.done()}
        for link in self.links:
            link.drop()
        if connecting:
            await stop_step("target connects", asyncio.wait(connecting), log=log)
        await stop_step("monitor close", self.monitor.close(), log=log)
        if self.management is not None:
            await stop_step("management port", self.management.stop(), log=log, steps=3)
        log.info("edge stopped", extra=fields(guid=str(self.guid)))

    async def _send_stopping(self) -> None:
        for copy in range(STOP_COPIES):
            if copy:
                await asyncio.sleep(STOP_COPY_GAP)
            await self.send_now()
        # Give targets still connecting a moment to take the stopping report.
        connecting = [link._connecting for link in self.links
                      if link._connecting is not None and not link._connecting.done()]
        if connecting:
            await asyncio.wait(connecting, timeout=STOP_GRACE)

    async def run(self) -> None:
        """Run until SIGINT or SIGTERM, then stop cleanly (the console script's body).

        SIGTERM is ``request_stop``: with ``drain_on_stop`` the edge drains first, and a
        second SIGTERM stops it at once. SIGINT (ctrl-c in a terminal) stops it at once,
        draining or not. SIGHUP re-reads the targets file, as operators expect of a
        daemon.
        """
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop_now)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        await self.serve()

    async def serve(self) -> None:
        """Start, run until ``request_stop`` (and the drain it may begin) is done, stop."""
        await self.start()
        if self._drain_asked and not self._stop_requested.is_set():
            self._begin_drain()  # (SIGTERM came while it started: drained all the same)
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()

    def request_stop(self) -> None:
        """Stop (what SIGTERM and SIGINT do): at once, or with ``drain_on_stop`` once the
        load reaches 0 or ``drain_timeout_ms`` passed, taking no new clients meanwhile.
        Asked again while draining, it stops at once."""
        if self._stop_requested.is_set():
            return
        if self.drain_deadline is not None:
            log.info("asked again to stop while draining: stopping now",
                     extra=fields(guid=str(self.guid), load=self.load))
            self._stop_requested.set()
        elif self.config.drain_on_stop and self._task is not None:
            self._begin_drain()
        elif self.config.drain_on_stop and not self._stopped.is_set():
            self._drain_asked = True  # starting: the drain begins once it reports
        else:
            self._stop_requested.set()

    def request_stop_now(self) -> None:
        """Stop at once, draining or not (SIGINT: ctrl-c in a terminal)."""
        if not self._stop_requested.is_set():
            if self.drain_deadline is not None:
                log.info("asked to stop now while draining: stopping",
                         extra=fields(guid=str(self.guid), load=self.load))
            self._stop_requested.set()

    def _begin_drain(self) -> None:
        timeout_ms = self.config.drain_timeout_ms
        self.drain_deadline = self.monotonic() + timeout_ms / 1000
        self.state = EdgeState.PAUSED
        log.info("draining: no new clients; stops when its load reaches 0 or at the "
                 "drain timeout", extra=fields(guid=str(self.guid), load=self.load,
                                               timeout_s=timeout_ms / 1000))
        self._wake.set()  # reported at once, not at the next tick
        self._tell("draining")

    @property
    def stop_requested(self) -> bool:
        """A stop is due: asked for (``request_stop``, ``stop``) and any drain over."""
        return self._stop_requested.is_set()

    def draining_ms(self) -> int | None:
        """Milliseconds until a drain stops the edge at the latest; None if not draining."""
        if self.drain_deadline is None:
            return None
        return max(0, math.ceil((self.drain_deadline - self.monotonic()) * 1000))

    def _check_drain(self) -> None:
        """After a load read: a drain is done when the load is 0, or at its deadline."""
        if self.drain_deadline is None or self._stop_requested.is_set():
            return
        if self.load_error is None and self.load == 0:
            log.info("drained: no client left; stopping", extra=fields(guid=str(self.guid)))
        elif self.monotonic() >= self.drain_deadline:
            log.warning("drain timed out with clients left; stopping (raise "
                        "drain_timeout_ms to let them finish)",
                        extra=fields(guid=str(self.guid), load=self.load,
                                     timeout_s=self.config.drain_timeout_ms / 1000,
                                     monitor_error=self.load_error or "none"))
        else:
            return
        self._stop_requested.set()

    # -- controls ------------------------------------------------------------
    async def pause(self) -> None:
        """No new clients: reported at once, not at the next tick."""
        if self.state is EdgeState.RUNNING:
            self.state = EdgeState.PAUSED
            log.info("edge paused", extra=fields(guid=str(self.guid)))
            await self.send_now()
            self._tell("paused")

    async def unpause(self) -> None:
        if self.drain_deadline is not None:
            raise ValueError("the edge is draining to stop: it takes no new clients")
        if self.state is EdgeState.PAUSED:
            self.state = EdgeState.RUNNING
            log.info("edge unpaused", extra=fields(guid=str(self.guid)))
            await self.send_now()
            self._tell("unpaused")

    def _reload_on_signal(self) -> None:
        try:
            self.reload_targets()
        except ConfigError as exc:
            log.warning("targets not reloaded; keeping the old ones", extra=fields(error=str(exc)))
            return
        log.info("targets reloaded", extra=fields(targets=len(self.links)))

    def reload_targets(self) -> None:
        """Re-read the targets file; links to unchanged targets keep their counters."""
        new = load_targets(self.config.targets_file)
        old = {(link.target.host, link.target.port, link.target.key): link
               for link in self.links}
        links = []
        for target in new:
            link = old.pop((target.host, target.port, target.key), None)
            links.append(link if link is not None else TargetLink(target))
        for gone in old.values():
            gone.drop()  # a connect still resolving is cancelled, not left to finish
        self.links = links
        self._warn_placeholder_keys()
        self._wake.set()  # report to new targets now, not at the next tick
        self._tell("targets-reloaded")

    def _tell(self, event: str) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("edge listener failed")

    def uptime(self) -> float:
        return self.monotonic() - self._started_mono

    @property
    def message_interval(self) -> float:
        return self.config.message_interval_ms / 1000

    def set_message_interval(self, ms: int) -> None:
        self.config.message_interval_ms = MESSAGE_INTERVAL.check(ms)
        self._wake.set()

    def set_load_sample(self, ms: int) -> None:
        self.config.load_sample_ms = LOAD_SAMPLE.check(ms)
        self._wake.set()

    # -- reporting -----------------------------------------------------------
    def current_report(self) -> Report:
        """What goes out now. While the monitor fails, a running edge says PAUSED (no new
        clients) with the reason in ``unhealthy``: a media server that does not answer
        must not get clients, and a balancer that predates the reason still keeps them
        away. Draining, it says PAUSED with the milliseconds left (``draining``).

        It carries the keys of the monitor's first ``max_streams`` streams, as many as
        fit the datagram (``wire.fit``); ``streams_reported`` and ``streams_not_sent``
        say which went out and how many were left out."""
        state, unhealthy = self.state, None
        draining = None if state is EdgeState.STOPPING else self.draining_ms()
        if self.load_error is not None and (state is EdgeState.RUNNING
                                            or draining is not None):
            state, unhealthy = EdgeState.PAUSED, _clip(f"monitor: {self.load_error}", 200)
        if draining is not None:
            state = EdgeState.PAUSED
        config = self.config
        names = list(dict.fromkeys(self.streams or ()))  # each once, in the monitor's order
        keys: dict[int, str] = {}
        for name in names:
            if len(keys) >= config.max_streams:
                break
            # (a name no client could ask for, the balancers never look up: no room taken;
            # nor one that is not text, a lone surrogate from a JSON answer)
            try:
                size = len(name.encode("utf-8"))
            except UnicodeEncodeError:
                continue
            if size <= MAX_NAME_BYTES:
                keys.setdefault(stream_key(name), name)
        report = fit(Report(
            state=state, address=config.redirect_address, load=self.load,
            interval_ms=config.message_interval_ms,
            capacity=config.capacity, agent=AGENT, unhealthy=unhealthy,
            group=config.group, private_address=config.private_address,
            bandwidth=self.bandwidth, bandwidth_limit=config.bandwidth_limit,
            streams=tuple(keys) or None, max_clients=config.max_clients, draining=draining))
        sent = report.streams or ()
        self.streams_reported = [keys[k] for k in sent]
        self.streams_not_sent = len(names) - len(sent)
        return report

    async def send_now(self) -> None:
        """Seal the current report once per distinct key and send it to every target.

        Never waits on the network: a target still being resolved gets the
        datagram when its socket is ready, so one slow or unresolvable
        balancer cannot delay the others.
        """
        report = self.current_report()
        now = self.clock()
        self._reported_load, self._reported_error = self.load, self.load_error
        self._reported_at = self.monotonic()
        sealed: dict[SharedKey, bytes] = {}
        for link in self.links:
            datagram = sealed.get(link.target.key)
            if datagram is None:
                datagram = sealed[link.target.key] = self._sealer.seal(
                    report, link.target.key, now=now)
            if link.transport is not None:
                self._transmit(link, datagram)
                continue
            link.pending = datagram  # the newest report wins
            if link._connecting is None or link._connecting.done():
                link._connecting = asyncio.create_task(self._connect(link))

    def _transmit(self, link: TargetLink, datagram: bytes) -> None:
        assert link.transport is not None
        try:
            link.transport.sendto(datagram)
        except OSError as exc:
            self._target_failed(link, exc.strerror or str(exc))
            link.close()
            return
        link.reports_sent += 1
        link.last_send_at = self.clock()
        link.last_result = "ok"
        self.reports_sent += 1
        link.clean_sends += 1
        if link.failing and link.clean_sends >= RECOVER_AFTER:
            link.failing = False
            log.info("reports reach the balancer again", extra=fields(
                target=str(link.target), send_errors=link.send_errors))

    def _target_failed(self, link: TargetLink, reason: str) -> None:
        """A send to ``link`` failed: counted there and in the total; a warning as it
        starts failing (not at every error), with the balancer's address and the error."""
        link.send_errors += 1
        self.send_errors += 1
        link.last_result = f"error: {reason}"
        link.clean_sends = 0
        if not link.failing:
            link.failing = True
            log.warning("reports to a balancer fail", extra=fields(
                target=str(link.target), error=reason, reports_sent=link.reports_sent))

    async def _connect(self, link: TargetLink) -> None:
        loop = asyncio.get_running_loop()
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can drop a cancel (a stop,
            # a reload removing this target) that arrives as the socket is made.
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _TargetProtocol(link, self._target_failed),
                    remote_addr=(link.target.host, link.target.port))
        except (OSError, TimeoutError) as exc:
            self._target_failed(link, "timed out resolving" if isinstance(exc, TimeoutError)
                                else getattr(exc, "strerror", None) or str(exc))
            return
        if self._closed:
            transport.close()
            return
        link.transport = transport
        if link.pending is not None:
            datagram, link.pending = link.pending, None
            self._transmit(link, datagram)

    async def refresh_and_send(self) -> None:
        await self._refresh_load()
        await self.send_now()
        self._check_drain()

    def _refresh_bandwidth(self) -> None:
        """With the load: the interface's rate since the last read, else the monitor's."""
        if self._interface is not None:
            try:
                # over a report interval at least: bursts must not read as nothing
                rate = self._interface.rate(self.monotonic(), self.message_interval)
            except OSError as exc:
                if self.bandwidth is not None:  # (said once per failure, not per read)
                    log.warning("cannot read the bandwidth; reporting none",
                                extra=fields(error=str(exc)))
                self.bandwidth = None
                return
            if rate is not None:
                self.bandwidth = rate
            return
        self.bandwidth = self.monitor.bandwidth()

    async def _refresh_load(self) -> None:
        try:
            # A slow monitor must not delay the report: past half an interval it has
            # failed, like one that raised, and the edge takes no new clients until it
            # answers (current_report): a media server too slow to say its load is not
            # one to send viewers to.
            timeout = min(MONITOR_TIMEOUT, max(0.05, self.message_interval / 2))
            try:
                async with asyncio.timeout(timeout):
                    load = await self.monitor.read()
            except TimeoutError:
                raise MonitorError(f"no answer within {timeout:g} s (half the report "
                                   "interval: a server too slow to say its load gets no "
                                   "clients)") from None
            if not (load == load and 0 <= load < float("inf")):
                raise MonitorError(f"monitor returned {load!r}")
            streams = self.monitor.streams()
            if streams is not None and not (isinstance(streams, list | tuple) and all(
                    isinstance(name, str) and name for name in streams)):
                raise MonitorError("monitor's streams() is not a list of names")
            self.load = float(load)
            self.streams = None if streams is None else list(streams)
            self._refresh_bandwidth()
        except Exception as exc:  # of any type: a plugin's bug must not end the reports
            message = str(exc) or type(exc).__name__
            if not isinstance(exc, (MonitorError, OSError, ValueError, TimeoutError)):
                message = f"{type(exc).__name__}: {message}"
            self._failed_reads += 1
            if (self.config.load_sample_ms > 0 and self._failed_reads < FAILED_SAMPLES
                    and self._read_once):
                return  # (one slow or failed sample on a busy host is not a dead server;
                # but before a first answer there is no load to keep: nothing made up)
            if self.load_error is None:
                log.warning("monitor failed; taking no new clients until it answers",
                            extra=fields(monitor=self.monitor.describe(), error=message))
            self.load_error = message
            return
        self._failed_reads = 0
        self._read_once = True
        if self.load_error is not None:
            log.warning("monitor answers again" + ("" if self.drain_deadline is not None
                                                   else "; taking clients"),
                        extra=fields(monitor=self.monitor.describe()))
        self.load_error = None

    def _moved(self) -> bool:
        """The load moved by max(1, 10 %) since the last report, or its health changed."""
        if (self.load_error is None) != (self._reported_error is None):
            return True  # (healthy or not: a failure whose words change is no move)
        last = self._reported_load
        return abs(self.load - last) >= max(MOVE_ABSOLUTE, MOVE_RELATIVE * last)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        # an interval after the last report (start() may have taken a while since)
        since = min(self.message_interval, max(0.0, self.monotonic() - self._reported_at))
        next_report = loop.time() + self.message_interval - since
        while not self._stopped.is_set():
            # Until the next report, or the next load sample if sooner; a wake set before
            # (a SIGHUP or a drain while start() opened the management port) ends it at once.
            wait = next_report - loop.time()
            sample = self.config.load_sample_ms / 1000
            if sample > 0:
                wait = min(wait, sample)
            if self.drain_deadline is not None and not self._stop_requested.is_set():
                wait = min(wait, self.drain_deadline - self.monotonic())  # (then it stops)
            # asyncio.timeout, not wait_for (here, in _refresh_load and _connect): on 3.11
            # wait_for drops a cancel that arrives as what it awaits completes, and stop()
            # would wait a whole interval for this task. _stopped is checked for the same.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wait)):
                    await self._wake.wait()
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                if woken or loop.time() >= next_report:
                    next_report = loop.time() + self.message_interval
                    await self.refresh_and_send()
                    continue
                await self._refresh_load()  # a sample: reported only if it moved
                self._check_drain()
                if (self._moved()
                        and self.monotonic() - self._reported_at >= QUICK_REPORT_GAP):
                    self.quick_reports += 1
                    await self.send_now()
            except Exception as exc:  # of any type: the next round still goes out
                now = asyncio.get_running_loop().time()
                if self._loop_failures.allow(type(exc).__qualname__, now) is not None:
                    log.exception("report round failed; going on")


def _clip(text: str, size: int) -> str:
    """``text`` cut to at most ``size`` bytes of UTF-8 (never inside a character)."""
    return text.encode("utf-8")[:size].decode("utf-8", "ignore")
