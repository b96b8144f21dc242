"""RTMP on the balancer: asyncio glue around ``lbmgmt.rtmp.server``.

``RtmpService`` owns the counters and, when RTMP shares the HTTP port, the
listening socket: ``PortSharer`` looks at each connection's first byte and
hands it to an ``RtmpSession`` (0x03, an RTMP handshake) or to the aiohttp
request handler, unchanged, so keep-alive and pipelining behave as on a plain
aiohttp port.

Deadlines are the sans-IO objects' (``FirstByteSniffer``, ``ServerConnection``):
each connection has one loop timer, ``ConnectionTimer``, set from their
``get_timer()`` after every receive and every expiry, as aioquic's asyncio
glue does; ``now`` is always ``loop.time()``.

Stopping goes in three steps so that it cannot hang: ``close`` (no new
connections), ``close_connections`` (connections still silent, RTMP sessions,
proxy relays; the HTTP ones handed to aiohttp are its runner's to close) and
only then ``wait_closed``: on Python 3.12.1+ ``asyncio.Server.wait_closed``
waits for every connection the listener ever accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from aiohttp import web

from lbmgmt.balancer.core import NO_SERVER, BalancerCore
from lbmgmt.balancer.registry import ServerEntry
from lbmgmt.balancer.relay import relay
from lbmgmt.balancer.rtmp_config import RtmpApp, RtmpConfig
from lbmgmt.endpoints import Endpoint, join_host_port, split_address
from lbmgmt.httpserve import stop_step
from lbmgmt.logs import fields
from lbmgmt.rtmp import handshake
from lbmgmt.rtmp.commands import Command, status
from lbmgmt.rtmp.server import (CommandReceived, ConnectionFailed, Event, ServerConnection,
                                State, TimedOut)
from lbmgmt.clocks import Clocks
from lbmgmt.rtmp.sniff import FirstByteSniffer, Sniffed

log = logging.getLogger("lbmgmt.rtmp")


def _split_app(app: str) -> tuple[str, str, str]:
    """'redirect/inst?token=1' → ('redirect', '/inst', 'token=1')."""
    path, _, query = app.partition("?")
    name, slash, rest = path.partition("/")
    return name, slash + rest, query


def edge_url(app: RtmpApp, address: str, *, client_scheme: str | None,
             client_port: int | None, instance: str = "", query: str = "") -> str:
    """The edge URL: scheme and port as configured, else as the edge or the client had them."""
    host, address_port = split_address(address)
    port = app.redirect_port or address_port or client_port
    scheme = app.redirect_scheme or client_scheme or "rtmp"
    url = f"{scheme}://{join_host_port(host, port)}/{app.redirect_app_name}{instance}"
    return f"{url}?{query}" if query else url


COUNTERS = ("connections", "redirected", "proxied", "no_server", "invalid_app",
            "protocol_errors", "timeouts", "refused")


class RtmpService:
    """The RTMP front: its connections and counters, choices made by ``core``."""

    def __init__(self, core: BalancerCore, config: RtmpConfig, clocks: Clocks) -> None:
        self.core = core
        self.config = config
        self.clocks = clocks
        self.active: set[RtmpSession] = set()
        self.waiting: set[PortSharer] = set()  # shared port: no first byte yet
        self.relays: set[asyncio.Task[None]] = set()  # proxy setups and their relays
        self.closing = False
        self.counters: Counter[str] = core.front("rtmp", COUNTERS, lambda: len(self.active))
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None

    @property
    def keep_raw(self) -> bool:
        return any(app.mode == "proxy" for app in self.config.apps.values())

    def redirect(self) -> ServerEntry | None:
        """The edge for one new RTMP client (counted by the core), or None."""
        return self.core.redirect("rtmp", self.clocks.monotonic())

    def session(self) -> RtmpSession:
        return RtmpSession(self)

    async def start(self, listen: Endpoint, http: web.AppRunner | None = None) -> None:
        """Listen on ``listen``: RTMP only, or shared with ``http`` when given."""
        loop = asyncio.get_running_loop()
        self.closing = False
        factory: Callable[[], asyncio.Protocol]
        if http is not None:
            server = http.server
            assert server is not None
            factory = lambda: PortSharer(self, server)  # noqa: E731
        else:
            factory = self.session
        self._server = await loop.create_server(factory, listen.bind_host, listen.port,
                                                reuse_address=True)
        self.address = self._server.sockets[0].getsockname()[:2]

    def track_relay(self, task: asyncio.Task[None]) -> None:
        self.relays.add(task)
        task.add_done_callback(self.relays.discard)

    def close(self) -> None:
        """Stop accepting connections; the open ones stay (``close_connections``)."""
        self.closing = True
        if self._server is not None:
            self._server.close()

    def close_connections(self) -> None:
        """Drop every connection this service holds: silent ones, sessions, relays.

        HTTP connections handed to aiohttp are not among them: its runner closes those.
        """
        self.closing = True
        for sharer in list(self.waiting):
            sharer.abort()
        for session in list(self.active):
            session.abort()
        for task in list(self.relays):
            task.cancel()

    async def wait_relays(self) -> None:
        """Until every cancelled proxy task has closed its sockets."""
        if self.relays:
            await asyncio.wait(set(self.relays))

    async def wait_closed(self) -> None:
        """Until the listener is closed; call after every connection was closed."""
        server, self._server = self._server, None
        if server is None:
            return
        try:
            await server.wait_closed()
        except BaseException:
            # Left waiting (a stop step's bound): drop whatever it still waits for,
            # where asyncio can (3.13+), rather than leave those connections open.
            abort_clients = getattr(server, "abort_clients", None)
            if abort_clients is not None:
                abort_clients()
            raise

    async def stop(self) -> None:
        """All of it, bounded, for a service with a port of its own.

        The daemon runs the steps itself, closing its HTTP connections in between.
        """
        self.close()
        self.close_connections()
        await stop_step("rtmp: end proxy relays", self.wait_relays(), log=log)
        await stop_step("rtmp: listener closed", self.wait_closed(), log=log)


class ConnectionTimer:
    """A connection's one loop timer, following its protocol object's ``get_timer()``.

    aioquic's shape: after every receive and every expiry the owner calls ``update``
    with the protocol's next deadline (absolute, ``loop.time()``'s clock); the loop
    handle is replaced only when that deadline changed, and ``expired(now)`` gets a
    ``now`` never before the deadline it was armed for.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 expired: Callable[[float], None]) -> None:
        self._loop = loop
        self._expired = expired
        self._handle: asyncio.TimerHandle | None = None
        self.at: float | None = None  # the armed deadline, None when disarmed

    def update(self, at: float | None) -> None:
        if self._handle is not None and at != self.at:
            self._handle.cancel()
            self._handle = None
        if self._handle is None and at is not None:
            self._handle = self._loop.call_at(at, self._fire)
        self.at = at

    def cancel(self) -> None:
        self.update(None)

    def _fire(self) -> None:
        at, self._handle, self.at = self.at, None, None
        assert at is not None
        # A loop runs a timer up to its clock resolution early: the protocol must still
        # see its deadline reached, or it would ask for the same deadline again at once.
        self._expired(max(at, self._loop.time()))


class PortSharer(asyncio.Protocol):
    """Waits for the first byte, then becomes RTMP or HTTP for good."""

    def __init__(self, service: RtmpService, http: web.Server) -> None:
        self.service = service
        self.http = http
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()  # a protocol factory runs in the loop
        self.sniffer = FirstByteSniffer(timeout=service.config.handshake_timeout_ms / 1000,
                                        now=self._loop.time())
        self._timer = ConnectionTimer(self._loop, self._on_timer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = cast(asyncio.Transport, transport)
        if self.service.closing:  # accepted just before the listener closed
            self.transport.abort()
            return
        self.service.waiting.add(self)
        self._timer.update(self.sniffer.get_timer())

    def _on_timer(self, now: float) -> None:
        for event in self.sniffer.handle_timer(now):
            if isinstance(event, TimedOut):
                self.service.counters["timeouts"] += 1
                log.debug("rtmp port: timed out", extra=fields(reason=event.reason,
                                                               peer=_peer(self.transport)))
                self.abort()
        self._timer.update(self.sniffer.get_timer())

    def abort(self) -> None:
        self.service.waiting.discard(self)
        self._timer.cancel()
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        events = self.sniffer.receive_data(data, now=self._loop.time())
        self._timer.update(self.sniffer.get_timer())
        for event in events:
            if not isinstance(event, Sniffed):
                continue
            self.service.waiting.discard(self)
            protocol: asyncio.Protocol
            if event.rtmp and self.service.config.enabled:
                protocol = self.service.session()
            else:
                protocol = self.http()
            self.transport.set_protocol(protocol)
            protocol.connection_made(self.transport)
            protocol.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.service.waiting.discard(self)
        self._timer.cancel()


def _peer(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport else None
    return f"{peer[0]}:{peer[1]}" if peer else "?"


class RtmpSession(asyncio.Protocol):
    def __init__(self, service: RtmpService) -> None:
        self.service = service
        cfg = service.config
        self._loop = asyncio.get_running_loop()  # built by a protocol factory, in the loop
        now = self._loop.time()
        self.conn = ServerConnection(max_chunk_size=cfg.max_chunk_size,
                                     max_message_size=cfg.max_message_size,
                                     time_ms=int(now * 1000), keep_raw=service.keep_raw,
                                     handshake_timeout=cfg.handshake_timeout_ms / 1000,
                                     idle_timeout=cfg.idle_timeout_ms / 1000, now=now)
        self.transport: asyncio.Transport | None = None
        self._timer = ConnectionTimer(self._loop, self._on_timer)
        self._accepted_app: RtmpApp | None = None
        self._connect: Command | None = None
        self._proxy: asyncio.Task[None] | None = None

    # -- asyncio callbacks --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = cast(asyncio.Transport, transport)
        service = self.service
        service.counters["connections"] += 1
        if service.closing:  # accepted just before the listener closed
            self.transport.abort()
            return
        if len(service.active) >= service.config.max_connections:
            service.counters["refused"] += 1
            self.transport.abort()
            return
        service.active.add(self)
        self._rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.service.active.discard(self)
        self._timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self._proxy is not None:
            return
        self._events(self.conn.receive_data(data, now=self._loop.time()))
        self._flush()
        self._rearm()

    def _on_timer(self, now: float) -> None:
        if self._proxy is None:
            self._events(self.conn.handle_timer(now))
        self._rearm()

    def _events(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ConnectionFailed):
                self.service.counters["protocol_errors"] += 1
                log.debug("rtmp protocol error", extra=fields(error=event.reason,
                                                              peer=_peer(self.transport)))
            elif isinstance(event, TimedOut):
                self.service.counters["timeouts"] += 1
                log.debug("rtmp timed out", extra=fields(reason=event.reason,
                                                         peer=_peer(self.transport)))
                self.abort()
            elif isinstance(event, CommandReceived):
                self._command(event.command)
            if self._proxy is not None:
                break

    # -- helpers ------------------------------------------------------------------
    def _rearm(self) -> None:
        """The one timer at the protocol's next deadline; none once the proxy has it."""
        # (the proxy's setup has timeouts of its own; a relay has none, as before)
        self._timer.update(self.conn.get_timer() if self._proxy is None else None)

    def abort(self) -> None:
        self._timer.cancel()
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        assert self.transport is not None
        out = self.conn.data_to_send()
        if out:
            self.transport.write(out)
        if self.conn.state is State.CLOSED and self._proxy is None:
            self.transport.close()  # after the queued bytes are written

    def _client_scheme_port(self) -> tuple[str | None, int | None]:
        tc_url = self._connect.command_object.get("tcUrl") if self._connect else None
        scheme = port = None
        if isinstance(tc_url, str):
            with contextlib.suppress(ValueError):
                parts = urlsplit(tc_url)
                scheme, port = parts.scheme or None, parts.port
        if port is None and self.transport is not None:
            sockname = self.transport.get_extra_info("sockname")
            port = sockname[1] if sockname else None
        return scheme, port

    # -- commands -----------------------------------------------------------------
    def _command(self, command: Command) -> None:
        if command.name == "connect":
            self._on_connect(command)
        elif command.name == "createStream" and self._accepted_app is not None:
            self.conn.send_command("_result", command.transaction_id, None, 1.0)
        elif command.name in ("play", "publish") and self._accepted_app is not None:
            stream = command.args[0] if command.args and isinstance(command.args[0], str) else ""
            self._redirect_stream(command, stream)

    def _on_connect(self, command: Command) -> None:
        self._connect = command
        obj = command.command_object if isinstance(command.command_object, dict) else {}
        app_field = obj.get("app")
        name, instance, query = _split_app(app_field if isinstance(app_field, str) else "")
        app = self.service.config.apps.get(name)
        if app is None:
            self.service.counters["invalid_app"] += 1
            self.conn.reject_connect(command.transaction_id, status(
                "error", "NetConnection.Connect.InvalidApp",
                f"Connection rejected: application '{name}' does not exist on this balancer"))
            return
        if app.mode == "proxy":
            assert self.transport is not None
            self.transport.pause_reading()
            self._proxy = asyncio.get_running_loop().create_task(self._start_proxy(app))
            self.service.track_relay(self._proxy)
            return
        if not app.redirect_on_connect:
            self._accepted_app = app
            self.conn.accept_connect(command.transaction_id, status(
                "status", "NetConnection.Connect.Success", "Connection succeeded.",
                objectEncoding=0.0))
            return
        entry = self.service.redirect()
        if entry is None:
            self.service.counters["no_server"] += 1
            self.conn.reject_connect(command.transaction_id, status(
                "error", "NetConnection.Connect.Rejected",
                f"Connection rejected: {NO_SERVER}"))
            return
        scheme, port = self._client_scheme_port()
        url = edge_url(app, entry.address, client_scheme=scheme, client_port=port,
                       instance=instance, query=query)
        self.service.counters["redirected"] += 1
        self.conn.reject_connect(command.transaction_id, status(
            "error", "NetConnection.Connect.Rejected", f"Connection rejected: redirect to {url}",
            ex={"code": 302.0, "redirect": url}))

    def _redirect_stream(self, command: Command, stream: str) -> None:
        app = self._accepted_app
        assert app is not None
        code = "NetStream.Play.Failed" if command.name == "play" else "NetStream.Publish.BadName"
        entry = self.service.redirect()
        if entry is None:
            self.service.counters["no_server"] += 1
            info = status("error", code, f"Rejected: {NO_SERVER}")
        else:
            scheme, port = self._client_scheme_port()
            url = edge_url(app, entry.address, client_scheme=scheme, client_port=port)
            url = f"{url}/{stream}" if stream else url
            self.service.counters["redirected"] += 1
            info = status("error", code, f"Rejected: redirect to {url}",
                          ex={"code": 302.0, "redirect": url})
        self.conn.send_command("onStatus", 0.0, None, info, stream_id=command.stream_id or 1)
        self.conn.close()

    # -- proxy mode ---------------------------------------------------------------
    async def _start_proxy(self, app: RtmpApp) -> None:
        """Connect to the chosen edge, replay the client's opening, then relay both ways.

        Cancelled (the balancer stops), it closes the edge socket and the client's
        connection, whichever stage it is at.
        """
        assert self.transport is not None and self._connect is not None
        loop = asyncio.get_running_loop()
        entry = self.service.redirect()
        if entry is None:
            self.service.counters["no_server"] += 1
            self._proxy = None
            self.conn.reject_connect(self._connect.transaction_id, status(
                "error", "NetConnection.Connect.Rejected",
                f"Connection rejected: {NO_SERVER}"))
            self._flush()
            return
        host, port = split_address(entry.address)
        port = app.redirect_port or port or 1935
        timeout = self.service.config.proxy_connect_timeout_ms / 1000
        edge: socket.socket | None = None
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, kind, proto, _, addr = infos[0]
            edge = socket.socket(family, kind, proto)
            edge.setblocking(False)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can drop the cancel of a
            # stop that arrives as the step completes, and the relay would start anyway.
            async with asyncio.timeout(timeout):
                await loop.sock_connect(edge, addr)
            await loop.sock_sendall(edge, self.conn.raw_c0c1)
            reply = bytearray()
            size = 1 + 2 * handshake.PACKET
            while len(reply) < size:
                async with asyncio.timeout(timeout):
                    chunk = await loop.sock_recv(edge, size - len(reply))
                if not chunk:
                    raise ConnectionError("edge closed during the handshake")
                reply += chunk
            if reply[0] != handshake.VERSION:
                raise ConnectionError(f"edge answered handshake version {reply[0]}")
            await loop.sock_sendall(edge, bytes(reply[1:1 + handshake.PACKET]))  # C2 = S1
            await loop.sock_sendall(edge, bytes(self.conn.raw_after_handshake))
        except (OSError, TimeoutError, ConnectionError) as exc:
            if edge is not None:
                edge.close()
            log.warning("rtmp proxy: edge unreachable", extra=fields(
                edge=entry.address, error=str(exc) or type(exc).__name__))
            self.service.counters["protocol_errors"] += 1
            self._proxy = None
            self.conn.reject_connect(self._connect.transaction_id, status(
                "error", "NetConnection.Connect.Failed",
                f"Connection failed: edge {entry.address} unreachable"))
            self._flush()
            return
        except BaseException:  # cancelled while reaching the edge
            if edge is not None:
                edge.close()
            self.abort()
            raise
        if self.transport.is_closing():  # the client left while we reached the edge
            edge.close()
            self._proxy = None
            return
        self.service.counters["proxied"] += 1
        # Take the client's socket out of asyncio's hands: a duplicate descriptor keeps
        # the connection open when the transport closes its own.
        client_sock = self.transport.get_extra_info("socket")
        client = socket.socket(fileno=os.dup(client_sock.fileno()))
        client.setblocking(False)
        self.transport.close()
        try:
            await relay(client, edge)  # cancelled: it shuts both down, we close them
        finally:
            client.close()
            edge.close()
            self.service.active.discard(self)
