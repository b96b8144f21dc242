"""The client port's asyncio glue: one ``FrontConnection`` per connection.

A connection is admitted (``Admission``: caps in total and per address), then
its first byte picks the protocol (``FirstByteSniffer``): 0x03 (an RTMP
handshake) hands the connection to an ``RtmpSession``; anything else is HTTP,
served here with ``HttpConnection`` (httptools) and ``Answers`` (the core).
Every byte goes through ``SlicedInput`` (a bounded slice per loop turn), and
each connection keeps one ``ConnectionTimer`` at its sans-IO object's
``get_timer()``, filed in the port's ``Deadlines`` (one loop handle for all).
``?serverInfoXML`` comes from ``ServerInfoCache``: made in slices that let the
loop run between them, at most once per ``max_age``, and written a slice a turn
as fast as the client reads. A closed connection leaves no reference cycle:
it is freed by reference counting, never by the garbage collector.

Stopping goes in three steps so that it cannot hang: ``close`` (no new
connections), ``close_connections`` (every connection, RTMP sessions and
relays included) and only then ``wait_closed``: on Python 3.12.1+
``asyncio.Server.wait_closed`` waits for every connection a listener accepted.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import cast

from lbmgmt.balancer.config import ClientsConfig, HttpConfig, WebRtcConfig
from lbmgmt.balancer.core import BalancerCore
from lbmgmt.admission import Admission
from lbmgmt.balancer.front.answers import Answers, ServerInfoWanted, http_date
from lbmgmt.balancer.front.http import (SLICE, Event, HttpConnection, HttpLimits, Refused,
                                        Request)
from lbmgmt.balancer.front.pacing import SlicedInput
from lbmgmt.balancer.front.rtmpt import COUNTERS as RTMPT_COUNTERS
from lbmgmt.balancer.front.rtmpt import HANDSHAKE_BYTES as RTMPT_HANDSHAKE_BYTES
from lbmgmt.balancer.front.rtmpt import RtmptSessions
from lbmgmt.balancer.front.rtsp import COUNTERS as RTSP_COUNTERS
from lbmgmt.balancer.front.rtsp import RtspAnswers
from lbmgmt.balancer.front.sniff import RTMP, RTSP, ProtocolSniffer, Sniffed
from lbmgmt.balancer.front.timer import ConnectionTimer, Deadlines
from lbmgmt.balancer.rtmp import RtmpService
from lbmgmt.balancer.rtsp_config import RtspConfig
from lbmgmt.balancer.serverinfo import (PER_SLICE, render_server_info,
                                        render_server_info_json, server_info_json_steps,
                                        server_info_steps)
from lbmgmt.clocks import Clocks
from lbmgmt.endpoints import Endpoint
from lbmgmt.logs import fields
from lbmgmt.steps import finish_between_turns
from lbmgmt.rtmp.server import TimedOut
from lbmgmt.rtsp.connection import Refused as RtspRefused
from lbmgmt.rtsp.connection import Event as RtspEvent
from lbmgmt.rtsp.connection import RtspConnection, RtspLimits, RtspRequest

log = logging.getLogger("lbmgmt.front")

HTTP_COUNTERS = ("requests", "bad_requests", "too_large", "head_timeouts", "idle_closed",
                 "write_timeouts")
WRITE_SLICE = 256 * 1024  # bytes of a big answer written per loop turn
PORT_COUNTERS = ("connections", "refused_total", "refused_address", "silent_timeouts",
                 "wrong_protocol")


class ServerInfoCache:
    """The serverInfoXML document without holding the loop.

    A pool of up to ``PER_SLICE`` edges is rendered afresh for every request (one
    slice, a millisecond or two). A larger one is made in slices, the loop running
    between them, and served from the cache for ``max_age`` seconds, or until an
    edge joins, leaves or changes state (a load that moved may be up to
    ``max_age`` old; who is in the pool never is).
    """

    def __init__(self, core: BalancerCore, clocks: Clocks, *, max_age: float = 1.0,
                 json: bool = False) -> None:
        self.core = core
        self.clocks = clocks
        self.render = render_server_info_json if json else render_server_info
        self.steps = server_info_json_steps if json else server_info_steps
        self.max_age = max_age
        self._document: bytes | None = None
        self._made_at = 0.0
        self._making: asyncio.Task[bytes] | None = None
        self.made = 0  # documents made (the rest were served from the cache)
        core.listeners.append(self._changed)

    def _changed(self, event: object) -> None:
        self._document = None

    async def document(self) -> bytes:
        now = self.clocks.monotonic()
        if len(self.core.registry) <= PER_SLICE:
            self.made += 1
            return self.render(self.core, now)
        if self._document is not None and now - self._made_at < self.max_age:
            return self._document
        if self._making is None:
            self._making = asyncio.get_running_loop().create_task(self._make(now))
        return await asyncio.shield(self._making)

    async def _make(self, now: float) -> bytes:
        try:
            document = await finish_between_turns(self.steps(self.core, now))
            self._document, self._made_at = document, now
            self.made += 1
            return document
        finally:
            self._making = None

    def close(self) -> None:
        if self._making is not None:
            self._making.cancel()


class ClientPort:
    """The listeners for clients, every connection on them, and their counters."""

    def __init__(self, core: BalancerCore, http: HttpConfig, clients: ClientsConfig,
                 rtmp: RtmpService, clocks: Clocks, *, rtsp: RtspConfig | None = None,
                 webrtc: WebRtcConfig | None = None) -> None:
        self.core = core
        self.rtmp = rtmp
        self.clocks = clocks
        rtmp_config = rtmp.config
        self.rtmpt_counters: Counter[str] = core.front(
            "rtmpt", RTMPT_COUNTERS, lambda: len(self.rtmpt))
        self.rtmpt = RtmptSessions(core, rtmp_config, self.rtmpt_counters, rtmp.counters,
                                   max_sessions=rtmp_config.max_connections,
                                   timeout=rtmp_config.idle_timeout_ms / 1000,
                                   max_bytes=rtmp_config.max_bytes_before_connect
                                   + RTMPT_HANDSHAKE_BYTES,
                                   per_address=rtmp_config.rtmpt_sessions_per_address)
        self.answers = Answers(core, http, webrtc or WebRtcConfig(),
                               self.rtmpt if rtmp_config.enabled else None)
        rtsp = rtsp or RtspConfig()
        self.rtsp_config = rtsp
        self.rtsp_limits = RtspLimits(head_timeout=rtsp.head_timeout_ms / 1000,
                                      idle_timeout=rtsp.idle_timeout_ms / 1000,
                                      max_head=rtsp.max_head_bytes, max_body=rtsp.max_body_bytes)
        self.rtsp_counters: Counter[str] = core.front(
            "rtsp", RTSP_COUNTERS, lambda: sum(c.rtsp is not None for c in self.connections))
        self.rtsp_answers = RtspAnswers(core, rtsp, self.rtsp_counters)
        self.limits = HttpLimits(head_timeout=http.head_timeout_ms / 1000,
                                 keepalive_timeout=http.keepalive_timeout_ms / 1000,
                                 max_head=http.max_head_bytes, max_body=http.max_body_bytes)
        self.admission = Admission(clients.max_connections, clients.max_connections_per_address)
        self.server_info = ServerInfoCache(core, clocks)
        self.server_info_json = ServerInfoCache(core, clocks, json=True)
        self.deadlines = Deadlines()  # every connection's deadline, on one loop handle
        self.connections: set[FrontConnection] = set()  # before the hand-over to RTMP
        self.http_counters: Counter[str] = core.front(
            "http", HTTP_COUNTERS, lambda: sum(c.http is not None for c in self.connections))
        self.counters: Counter[str] = core.front("clients", PORT_COUNTERS,
                                                 lambda: self.admission.total)
        self.closing = False
        self._servers: list[asyncio.Server] = []
        self._date_second = -1
        self._date = b""

    def date_line(self) -> bytes:
        """The whole Date header line now, made at most once a second."""
        second = int(self.clocks.wall())
        if second != self._date_second:
            self._date_second = second
            self._date = b"Date: %s\r\n" % http_date(second)
        return self._date

    async def listen(self, endpoint: Endpoint, *, http: bool, rtmp: bool,
                     rtsp: bool = False) -> tuple[str, int]:
        """Serve ``endpoint``; returns the bound address (port 0 works)."""
        loop = asyncio.get_running_loop()
        self.closing = False
        listener = Listener(http=http, rtmp=rtmp, rtsp=rtsp)
        server = await loop.create_server(
            lambda: FrontConnection(self, listener),
                                          endpoint.bind_host, endpoint.port,
                                          reuse_address=True)
        self._servers.append(server)
        address = cast(tuple[str, int], tuple(server.sockets[0].getsockname()[:2]))
        listener.port = address[1]
        return address

    def close(self) -> None:
        """Stop accepting connections; the open ones stay (``close_connections``)."""
        self.closing = True
        for server in self._servers:
            server.close()

    def close_connections(self) -> None:
        self.closing = True
        self.server_info.close()
        self.server_info_json.close()
        for conn in list(self.connections):
            conn.abort()
        self.rtmp.close_connections()

    async def wait_closed(self) -> None:
        """Until the listeners are closed; call after every connection was closed."""
        servers, self._servers = self._servers, []
        for server in servers:
            try:
                await server.wait_closed()
            except BaseException:
                # Left waiting (a stop step's bound): drop whatever it still waits for,
                # where asyncio can (3.13+), rather than leave those connections open.
                abort_clients = getattr(server, "abort_clients", None)
                if abort_clients is not None:
                    abort_clients()
                raise


class Listener:
    """One listening address: the protocols it serves, and its port once bound."""

    __slots__ = ("http", "port", "rtmp", "rtsp")

    def __init__(self, *, http: bool, rtmp: bool, rtsp: bool) -> None:
        self.http = http
        self.rtmp = rtmp
        self.rtsp = rtsp
        self.port: int | None = None  # the port clients reach (their edge port by default)


class FrontConnection(asyncio.Protocol):
    """One client connection: admitted, sniffed, then HTTP here or RTMP handed over."""

    # (slots: one per connection, made and dropped for every client)
    __slots__ = (
        "_admitted", "_busy", "_drained", "_input", "_loop", "_queue", "_timer", "_write_paused",
        "address", "http", "listener", "port", "rtsp", "sniffer", "transport"
    )

    def __init__(self, port: ClientPort, listener: Listener) -> None:
        self.port = port
        self.listener = listener
        self._loop = asyncio.get_running_loop()  # a protocol factory runs in the loop
        self.transport: asyncio.Transport | None = None
        self.address = "?"
        self._admitted = False
        self.sniffer = ProtocolSniffer(timeout=port.limits.head_timeout, now=self._loop.time(),
                                       rtsp=listener.rtsp, max_line=port.limits.max_head)
        self.http: HttpConnection | None = None
        self.rtsp: RtspConnection | None = None
        self._input: SlicedInput | None = None
        self._timer = ConnectionTimer(self._loop, self._on_timer, port.deadlines)
        self._queue: list[Event] = []  # behind a serverInfoXML being made
        self._busy = False  # an answer is being made (serverInfoXML): the queue waits
        self._write_paused = False  # the transport's buffer is full (flow control)
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio callbacks --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = cast(asyncio.Transport, transport)
        port = self.port
        port.counters["connections"] += 1
        if port.closing:  # accepted just before the listener closed
            self.transport.abort()
            return
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        refused = port.admission.admit(self.address)
        if refused is not None:
            port.counters[f"refused_{refused}"] += 1
            log.debug("client refused", extra=fields(peer=self.address, cap=refused))
            self.transport.abort()
            return
        self._admitted = True
        port.connections.add(self)
        self._input = SlicedInput(self._loop, self.transport, self._slice, budget=SLICE)
        self._rearm()

    def data_received(self, data: bytes) -> None:
        # (uvloop takes protocol.data_received once, at set_protocol: it cannot be
        # replaced by the reader's own method later)
        if self._input is not None:
            self._input.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        # Every reference back to this object is let go, so that it is freed at once
        # (reference counting) rather than by the garbage collector, whose work grows
        # with every object in the balancer (10 000 edges: milliseconds per collection).
        self._timer.close()
        if self.http is not None:
            self.http.close()
        if self.rtsp is not None:
            self.rtsp.close()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # (_write_in_slices finds the transport closing)
        if self._input is not None:
            self._input.stop()
        self.port.connections.discard(self)
        self._release()

    def _release(self) -> None:
        if self._admitted:
            self._admitted = False
            self.port.admission.release(self.address)

    def abort(self) -> None:
        self._timer.cancel()
        if self._input is not None:
            self._input.stop()
        self.port.connections.discard(self)
        if self.transport is not None:
            self.transport.abort()

    # -- input --------------------------------------------------------------------
    def _slice(self, data: bytes) -> None:
        now = self._loop.time()
        if self.http is not None:
            self._answer(self.http.receive_data(data, now))
            return
        if self.rtsp is not None:
            self._answer_rtsp(self.rtsp.receive_data(data, now))
            return
        for event in self.sniffer.receive_data(data, now):
            if not isinstance(event, Sniffed):
                continue
            protocol, listener = event.protocol, self.listener
            if protocol is RTMP and listener.rtmp:
                self._to_rtmp(event.data)
            elif protocol is RTSP and listener.rtsp:
                self.port.rtsp_counters["connections"] += 1
                # (deadlines from the connection's start: the sniffing took some of it)
                self.rtsp = RtspConnection(self.port.rtsp_limits, now=self.sniffer.started)
                self._answer_rtsp(self.rtsp.receive_data(event.data, now))
            elif listener.http and protocol is not RTSP:
                # (RTMP bytes where RTMP is off: HTTP's 400 says so)
                self.http = HttpConnection(self.port.limits, now=self.sniffer.started)
                self._answer(self.http.receive_data(event.data, now))
            else:  # a protocol this port does not serve
                self.port.counters["wrong_protocol"] += 1
                log.debug("client speaks a protocol this port does not serve",
                          extra=fields(peer=self.address, protocol=protocol))
                self.abort()

    def _to_rtmp(self, first: bytes) -> None:
        """Hand the connection, its admission and every byte read so far to a session."""
        assert self.transport is not None and self._input is not None
        rest = self._input.take()
        self._input.stop()
        self._timer.close()
        self.port.connections.discard(self)
        admitted, self._admitted = self._admitted, False
        address = self.address
        release = (lambda: self.port.admission.release(address)) if admitted else (lambda: None)
        session = self.port.rtmp.session(release)
        self.transport.set_protocol(session)
        session.connection_made(self.transport)
        if not self.transport.is_closing():
            session.data_received(first + rest)
            if self._input.paused:
                self.transport.resume_reading()

    # -- HTTP ---------------------------------------------------------------------
    def _answer(self, events: list[Event]) -> None:
        """Answer ``events`` in order, after those queued behind a serverInfoXML."""
        queue = self._queue
        if queue:
            queue.extend(events)
            if self._busy:
                return
            events = list(queue)
            queue.clear()
        http, port = self.http, self.port
        assert http is not None and self.transport is not None
        if events:
            http.date_line = port.date_line()
            now = port.clocks.monotonic()
            for i, event in enumerate(events):
                if type(event) is Request:
                    port.http_counters["requests"] += 1
                    answer = port.answers.answer(event, now=now, local_port=self.listener.port,
                                                 address=self.address)
                    if type(answer) is ServerInfoWanted:
                        self._busy = True
                        queue.extend(events[i + 1:])
                        assert self._input is not None
                        self._input.hold()
                        self._loop.create_task(self._server_info(event, answer.json))
                        break
                    http.send(event, answer, now=self._loop.time())  # type: ignore[arg-type]
                elif isinstance(event, Refused):
                    port.http_counters["too_large" if event.status in (413, 414, 431)
                                       else "bad_requests"] += 1
                    log.debug("http request refused", extra=fields(
                        peer=self.address, status=event.status, reason=event.reason))
                elif isinstance(event, TimedOut):
                    port.http_counters["head_timeouts" if "head" in event.reason
                                       else "idle_closed"] += 1
        # the answers out, and the connection closed after them if it ends
        out = http.data_to_send()
        if out:
            self.transport.write(out)
        if http.closed and not queue and not self._busy:
            if self._input is not None:
                self._input.stop()
            self.transport.close()  # after the queued bytes are written
        self._timer.update(None if self._busy else http.get_timer())

    async def _server_info(self, request: Request, json: bool) -> None:
        try:
            cache = self.port.server_info_json if json else self.port.server_info
            document = await cache.document()
        except asyncio.CancelledError:
            self.abort()
            raise
        if self.transport is None or self.transport.is_closing() or self.http is None:
            return
        self.http.date_line = self.port.date_line()
        self.http.send(request, self.port.answers.server_info(document, json),
                       now=self._loop.time())
        if not await self._write_in_slices(self.http.data_to_send()):
            return
        self._busy = False
        assert self._input is not None
        if not self._write_paused:  # (else resume_writing releases it)
            self._input.release()
        self._answer([])

    async def _write_in_slices(self, data: bytes) -> bool:
        """A big answer (serverInfoXML: megabytes), ``WRITE_SLICE`` bytes a loop turn and
        only as fast as the client reads (flow control): copying it into the socket at
        once would hold the loop, and a client that does not read would hold it all in
        memory. A client that takes none of it for ``keepalive_timeout`` is dropped.
        False: the connection is gone."""
        view = memoryview(data)
        for start in range(0, len(view), WRITE_SLICE):
            transport = self.transport
            if transport is None or transport.is_closing():
                return False
            if self._write_paused:
                self._drained = self._loop.create_future()
                try:
                    async with asyncio.timeout(self.port.limits.keepalive_timeout):
                        await self._drained
                except TimeoutError:
                    self.port.http_counters["write_timeouts"] += 1
                    log.debug("client reads too slowly", extra=fields(peer=self.address))
                    self.abort()
                    return False
                finally:
                    self._drained = None
                if transport.is_closing():
                    return False
            transport.write(view[start:start + WRITE_SLICE])
            await asyncio.sleep(0)  # everything else that is ready runs in between
        return True

    def pause_writing(self) -> None:
        # The client does not read its answers: read no more of its requests until it
        # does (its answers would pile up here, the larger side of every exchange).
        self._write_paused = True
        if self._input is not None and not self._busy:
            self._input.hold()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._input is not None and not self._busy:
            self._input.release()

    # -- RTSP ---------------------------------------------------------------------
    def _answer_rtsp(self, events: list[RtspEvent]) -> None:
        rtsp, port = self.rtsp, self.port
        assert rtsp is not None and self.transport is not None
        counters = port.rtsp_counters
        for event in events:
            if type(event) is RtspRequest:
                if rtsp.finished:  # read behind a redirect: the client is gone elsewhere
                    continue
                response = port.rtsp_answers.answer(event, now=port.clocks.monotonic(),
                                                    client_port=self.listener.port,
                                                    client=self.address)
                rtsp.send(event, response, now=self._loop.time())
            elif isinstance(event, RtspRefused):
                counters["too_large" if event.status in (413, 414) else "bad_requests"] += 1
                log.debug("rtsp request refused", extra=fields(
                    peer=self.address, status=event.status, reason=event.reason))
            elif isinstance(event, TimedOut):
                counters["timeouts"] += 1
        out = rtsp.data_to_send()
        if out:
            self.transport.write(out)
        if rtsp.closed:
            if self._input is not None:
                self._input.stop()
            self.transport.close()  # after the queued bytes are written
        self._timer.update(rtsp.get_timer())

    # -- time ---------------------------------------------------------------------
    def _rearm(self) -> None:
        if self.http is not None:
            self._timer.update(None if self._busy else self.http.get_timer())
        elif self.rtsp is not None:
            self._timer.update(self.rtsp.get_timer())
        else:
            self._timer.update(self.sniffer.get_timer())

    def _on_timer(self, now: float) -> None:
        if self.http is not None:
            self._answer(self.http.handle_timer(now))
            return
        if self.rtsp is not None:
            self._answer_rtsp(self.rtsp.handle_timer(now))
            return
        for event in self.sniffer.handle_timer(now):
            if isinstance(event, Sniffed) and self.listener.http:
                # a request line that never ended: HTTP's own head deadline has passed
                # too (it counts from the same start), and it answers 408
                started = self.sniffer.started
                self.http = HttpConnection(self.port.limits, now=started)
                self._answer(self.http.receive_data(event.data, started))
                self._answer(self.http.handle_timer(now))
                return
            if isinstance(event, (Sniffed, TimedOut)):
                self.port.counters["silent_timeouts"] += 1
                log.debug("client said nothing", extra=fields(peer=self.address))
                self.abort()
        self._rearm()
