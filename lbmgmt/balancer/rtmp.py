"""The RTMP front: asyncio glue around ``lbmgmt.rtmp.server``, one session per connection.

Connections arrive from the client port (``lbmgmt.balancer.front.protocol``),
which admitted them and sniffed their first byte. ``RtmpService`` holds the
sessions, the proxy relays and the counters; each ``RtmpSession`` feeds its
``ServerConnection`` through ``SlicedInput`` (a bounded slice per loop turn)
and keeps one ``ConnectionTimer`` at the codec's ``get_timer()``; ``now`` is
always ``loop.time()``. A session's admission is released when it is gone for
good: its connection closed, or its relay ended.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable
from typing import cast

from lbmgmt.balancer.core import NO_SERVER, BalancerCore
from lbmgmt.balancer.front.pacing import SlicedInput
from lbmgmt.balancer.front.rtmp_apps import RtmpCommands
from lbmgmt.balancer.front.timer import ConnectionTimer, Deadlines
from lbmgmt.balancer.registry import ServerEntry
from lbmgmt.balancer.relay import relay
from lbmgmt.balancer.rtmp_config import RtmpApp, RtmpConfig
from lbmgmt.clocks import Clocks
from lbmgmt.endpoints import split_address
from lbmgmt.logs import fields
from lbmgmt.rtmp import handshake
from lbmgmt.rtmp.commands import Command, status
from lbmgmt.rtmp.server import (CommandReceived, ConnectionFailed, Event, ServerConnection,
                                State, TimedOut)

log = logging.getLogger("lbmgmt.rtmp")
SLICE = 8192  # bytes handed to a session's codec per loop turn


COUNTERS = ("connections", "redirected", "proxied", "no_server", "invalid_app",
            "protocol_errors", "timeouts", "refused", "edge_unreachable")


class RtmpService:
    """The RTMP front: its sessions, relays and counters; choices made by ``core``."""

    def __init__(self, core: BalancerCore, config: RtmpConfig, clocks: Clocks) -> None:
        self.core = core
        self.config = config
        self.clocks = clocks
        self.active: set[RtmpSession] = set()  # sessions, relaying ones included
        self.deadlines = Deadlines()  # every session's deadline, on one loop handle
        self.relays: set[asyncio.Task[None]] = set()  # proxy setups and their relays
        self.closing = False
        self.counters: Counter[str] = core.front("rtmp", COUNTERS, lambda: len(self.active))

    @property
    def keep_raw(self) -> bool:
        return any(app.mode == "proxy" for app in self.config.apps.values())

    def redirect(self, client: str | None = None) -> ServerEntry | None:
        """The edge for one new RTMP client (counted by the core), or None."""
        return self.core.redirect("rtmp", self.clocks.monotonic(), client)

    def session(self, release: Callable[[], None] = lambda: None) -> RtmpSession:
        """A session; ``release`` is called once, when it is gone for good."""
        return RtmpSession(self, release)

    def track_relay(self, task: asyncio.Task[None]) -> None:
        self.relays.add(task)
        task.add_done_callback(self.relays.discard)

    def close_connections(self) -> None:
        """Drop every session and relay (the balancer stops)."""
        self.closing = True
        for session in list(self.active):
            session.abort()
        for task in list(self.relays):
            task.cancel()

    async def wait_relays(self) -> None:
        """Until every cancelled proxy task has closed its sockets."""
        if self.relays:
            await asyncio.wait(set(self.relays))


def _peer(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport else None
    return f"{peer[0]}:{peer[1]}" if peer else "?"


class RtmpSession(asyncio.Protocol):
    def __init__(self, service: RtmpService, release: Callable[[], None]) -> None:
        self.service = service
        self._release: Callable[[], None] | None = release
        cfg = service.config
        self._loop = asyncio.get_running_loop()  # built by a protocol factory, in the loop
        now = self._loop.time()
        self.conn = ServerConnection(max_chunk_size=cfg.max_chunk_size,
                                     max_message_size=cfg.max_message_size,
                                     time_ms=int(now * 1000), keep_raw=service.keep_raw,
                                     handshake_timeout=cfg.handshake_timeout_ms / 1000,
                                     idle_timeout=cfg.idle_timeout_ms / 1000,
                                     connect_timeout=cfg.connect_timeout_ms / 1000,
                                     max_before_connect=cfg.max_bytes_before_connect,
                                     min_chunk_size=cfg.min_chunk_size, now=now)
        self.transport: asyncio.Transport | None = None
        self._input: SlicedInput | None = None
        self._timer = ConnectionTimer(self._loop, self._on_timer, service.deadlines)
        self.commands: RtmpCommands | None = None  # from the first command on
        self._connect: Command | None = None  # a proxy's connect, answered on failure
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
        self._input = SlicedInput(self._loop, self.transport, self._slice, budget=SLICE)
        self._rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        # (the timer and the reader let go of this session's methods: no cycle is left
        # for the garbage collector; a relay, if any, needs neither)
        self._timer.close()
        if self._input is not None:
            self._input.stop()
        if self._proxy is None:  # a relay outlives the transport: it ends the session
            self._gone()

    def _gone(self) -> None:
        self.service.active.discard(self)
        release, self._release = self._release, None
        if release is not None:
            release()

    def data_received(self, data: bytes) -> None:
        if self._proxy is None and self._input is not None:
            self._input.feed(data)

    def _slice(self, data: bytes) -> None:
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
        if self._input is not None:
            self._input.stop()
        if self.transport is not None:
            self.transport.abort()

    def _flush(self) -> None:
        assert self.transport is not None
        out = self.conn.data_to_send()
        if out:
            self.transport.write(out)
        if self.conn.state is State.CLOSED and self._proxy is None:
            self.transport.close()  # after the queued bytes are written

    # -- commands -----------------------------------------------------------------
    def _command(self, command: Command) -> None:
        if self.commands is None:
            assert self.transport is not None
            sockname = self.transport.get_extra_info("sockname")
            service = self.service
            peer = self.transport.get_extra_info("peername")
            self.commands = RtmpCommands(service.core, service.config, service.counters,
                                         self.conn,
                                         local_port=sockname[1] if sockname else None,
                                         client=str(peer[0]) if peer else None)
        proxy = self.commands.handle(command, self.service.clocks.monotonic())
        if proxy is not None:
            assert self.transport is not None
            self._connect = command
            self.transport.pause_reading()
            self._proxy = asyncio.get_running_loop().create_task(self._start_proxy(proxy))
            self.service.track_relay(self._proxy)

    # -- proxy mode ---------------------------------------------------------------
    async def _start_proxy(self, app: RtmpApp) -> None:
        try:
            await self._proxy_to_edge(app)
        finally:
            # Refused, failed, cancelled, relayed to its end, or the client left: the
            # transport is closing and the session gone (its admission released) now.
            if self.transport is None or self.transport.is_closing():
                self._gone()

    async def _reach(self, app: RtmpApp, entry: ServerEntry) -> socket.socket | None:
        """A socket to ``entry`` with the client's handshake and opening replayed on it,
        or None: the edge is unreachable (counted, and suspect for a while)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        service = self.service
        # (the balancer reaches it as a client outside the fleet's networks would)
        host, port = split_address(service.core.address_for(entry))
        port = app.redirect_port or port or 1935
        timeout = service.config.proxy_connect_timeout_ms / 1000
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
            service.counters["edge_unreachable"] += 1
            service.core.unreachable(entry, service.clocks.monotonic(),
                                     suspect_for=service.config.proxy_suspect_ms / 1000,
                                     protocol="rtmp", error=str(exc) or type(exc).__name__)
            return None
        except BaseException:  # cancelled while reaching the edge
            if edge is not None:
                edge.close()
            self.abort()
            raise
        return edge

    async def _proxy_to_edge(self, app: RtmpApp) -> None:
        """Connect to the chosen edge, replay the client's opening, then relay both ways.

        Cancelled (the balancer stops), it closes the edge socket and the client's
        connection, whichever stage it is at.
        """
        assert self.transport is not None and self._connect is not None
        service = self.service
        config = service.config
        tried: list[str] = []
        edge: socket.socket | None = None
        for _ in range(1 + config.proxy_retries):
            entry = service.redirect(self.commands.client if self.commands else None)
            if entry is None:
                break
            edge = await self._reach(app, entry)
            if edge is not None:
                break
            tried.append(entry.address)
            if self.transport.is_closing():  # the client left meanwhile
                return
        if edge is None:
            self._proxy = None
            if not tried:
                service.counters["no_server"] += 1
                info = status("error", "NetConnection.Connect.Rejected",
                              f"Connection rejected: {NO_SERVER}")
            else:
                info = status("error", "NetConnection.Connect.Failed",
                              f"Connection failed: no edge reachable (tried "
                              f"{', '.join(tried)})")
            self.conn.reject_connect(self._connect.transaction_id, info)
            self._flush()
            return
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
