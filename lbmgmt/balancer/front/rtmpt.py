"""RTMPT (RTMP tunnelled in HTTP POSTs) on the client port, for the redirect applications.

The client opens a session (``POST /open/1`` → ``<id>\\n``) and then carries
RTMP's bytes in the bodies of ``/send/<id>/<n>`` and fetches ours with
``/idle/<id>/<n>``; every answer's body is one byte (the polling interval,
which ffmpeg reads and ignores) and then the RTMP bytes waiting for it;
``/close/<id>/<n>`` ends the session. ``/fcs/ident2`` gets 404, as clients
that ask expect (ffmpeg 5.1 does not ask). Each session runs the RTMP
handshake and the redirect applications' commands (``RtmpCommands``) on a
``ServerConnection``: ``connect`` is rejected with the edge's URL, whose
scheme is the client's (``rtmpt``) and whose port is the one the client came
through (``edge_url``). Proxy applications are not served over RTMPT.

Budgets: at most ``per_address`` sessions opened from one client address (its
own oldest is dropped to make room for its new one, so one client cannot push
out anyone else's) and ``max_sessions`` in all (then the least recently used
goes, the likeliest abandoned); each dropped after ``timeout`` seconds without
a request and after ``max_bytes`` received; no timer of its own: old sessions
are swept on each request.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.front.http import Request, Response
from lbmgmt.balancer.front.rtmp_apps import RtmpCommands
from lbmgmt.balancer.rtmp_config import RtmpConfig
from lbmgmt.rtmp.server import CommandReceived, ConnectionFailed, ServerConnection, State

FCS = ("Content-Type", "application/x-fcs")
NO_CACHE = ("Cache-Control", "no-cache")
SERVER = ("Server", "lbmgmt")
HEADERS = (SERVER, FCS, NO_CACHE)
PLAIN = (SERVER, ("Content-Type", "text/plain; charset=utf-8"))
INTERVAL = b"\x01"  # the polling interval byte (clients read it; ffmpeg ignores it)
PATHS = (b"/open/", b"/send/", b"/idle/", b"/close/", b"/fcs/ident2")
HANDSHAKE_BYTES = 1 + 2 * 1536  # C0, C1 and C2: before what max_bytes_before_connect counts
COUNTERS = ("sessions", "requests", "unknown_session", "expired", "evicted", "too_large",
            "protocol_errors")


def is_rtmpt(path: bytes) -> bool:
    return path.startswith(PATHS)


@dataclass(slots=True)
class _Tunnel:
    conn: ServerConnection
    commands: RtmpCommands
    last: float
    address: str  # the client address that opened it
    received: int = 0


class RtmptSessions:
    def __init__(self, core: BalancerCore, config: RtmpConfig, counters: Counter[str],
                 rtmp_counters: Counter[str], *, max_sessions: int, timeout: float,
                 max_bytes: int, per_address: int = 16,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.core = core
        self.config = config
        self.counters = counters  # the tunnel's own
        self.rtmp_counters = rtmp_counters  # redirects, no_server, invalid_app: RTMP's
        self.max_sessions = max_sessions
        self.per_address = per_address
        # each address's sessions, oldest first (ids only: the tunnels are in sessions)
        self.by_address: dict[str, OrderedDict[bytes, None]] = {}
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._random = random
        self.sessions: OrderedDict[bytes, _Tunnel] = OrderedDict()  # least recent first

    def __len__(self) -> int:
        return len(self.sessions)

    def answer(self, request: Request, *, now: float, local_port: int | None,
               address: str = "?") -> Response:
        """``now``: the core's monotonic clock; ``local_port``: the port the client
        reached; ``address``: the client's."""
        self.counters["requests"] += 1
        self._sweep(now)
        path = request.path
        if request.method != "POST" or path == b"/fcs/ident2":
            return Response(404, b"404: Not Found", PLAIN)
        if path.startswith(b"/open/"):
            return self._open(now, local_port, address)
        kind, _, rest = path[1:].partition(b"/")
        session_id = rest.partition(b"/")[0]
        tunnel = self.sessions.get(session_id)
        if tunnel is None or tunnel.address != address:  # (a session is its opener's)
            self.counters["unknown_session"] += 1
            return Response(404, b"404: no such RTMPT session", PLAIN)
        self.sessions.move_to_end(session_id)
        tunnel.last = now
        if kind == b"close":
            self._drop(session_id)
            return Response(200, b"\x00", HEADERS)
        if kind == b"send" and request.body:
            tunnel.received += len(request.body)
            if tunnel.received > self.max_bytes:
                self.counters["too_large"] += 1
                self._drop(session_id)
                return Response(400, b"400: too much for an RTMPT session here", PLAIN)
            for event in tunnel.conn.receive_data(request.body, now):
                if isinstance(event, ConnectionFailed):
                    self.counters["protocol_errors"] += 1
                elif isinstance(event, CommandReceived):
                    tunnel.commands.handle(event.command, now)
        out = tunnel.conn.data_to_send()
        if tunnel.conn.state is State.CLOSED and not out:
            self._drop(session_id)  # said its last: the client closes next
        return Response(200, INTERVAL + out, HEADERS)

    def _open(self, now: float, local_port: int | None, address: str) -> Response:
        own = self.by_address.get(address)
        while own and len(own) >= self.per_address:
            self._drop(next(iter(own)))
            self.counters["evicted"] += 1
        while len(self.sessions) >= self.max_sessions:
            self._drop(next(iter(self.sessions)))
            self.counters["evicted"] += 1
        session_id = self._random(8).hex().encode()
        config = self.config
        conn = ServerConnection(max_chunk_size=config.max_chunk_size,
                                max_message_size=config.max_message_size,
                                time_ms=int(now * 1000), min_chunk_size=config.min_chunk_size,
                                now=now)
        commands = RtmpCommands(self.core, config, self.rtmp_counters, conn,
                                local_port=local_port, protocol="rtmpt", proxy=False,
                                client=address)
        self.sessions[session_id] = _Tunnel(conn, commands, now, address)
        self.by_address.setdefault(address, OrderedDict())[session_id] = None
        self.counters["sessions"] += 1
        return Response(200, session_id + b"\n", HEADERS)

    def _sweep(self, now: float) -> None:
        sessions = self.sessions
        while sessions:
            session_id, tunnel = next(iter(sessions.items()))
            if now - tunnel.last < self.timeout:
                break
            self._drop(session_id)
            self.counters["expired"] += 1

    def _drop(self, session_id: bytes) -> None:
        tunnel = self.sessions.pop(session_id)
        own = self.by_address[tunnel.address]
        del own[session_id]
        if not own:
            del self.by_address[tunnel.address]
