"""RTMP deadlines, driven by hand: no sleeping, no sockets.

The sans-IO objects (``ServerConnection``, ``ProtocolSniffer``) take ``now``
and give ``get_timer()``; ``handle_timer(now)`` past it closes with one
``TimedOut``. The glue tests run a real asyncio loop whose clock the test sets
(``ManualClockLoop``), so the loop's own timer fires when the test moves time
past the deadline, and check that a connection holds one loop timer, re-armed
from ``get_timer()``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from lbmgmt.balancer import front, serverinfo
from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.config import ClientsConfig, HttpConfig
from lbmgmt.balancer.front.protocol import ClientPort, FrontConnection, Listener
from lbmgmt.balancer.front.timer import ConnectionTimer, Deadlines
from lbmgmt.balancer.rtmp import RtmpService, RtmpSession
from lbmgmt.balancer.rtmp_config import RtmpConfig
from lbmgmt.clocks import Clocks
from lbmgmt.rtmp import chunks, handshake
from lbmgmt.rtmp.client import ClientConnection
from lbmgmt.rtmp.server import (ConnectionFailed, HandshakeCompleted, MessageReceived,
                                ServerConnection, State, TimedOut)
from lbmgmt.balancer.front.sniff import HTTP, RTMP, RTSP, ProtocolSniffer, Sniffed
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey

T0 = 1000.0


def opened(client: ClientConnection, server: ServerConnection, now: float) -> None:
    """The handshake, all of it at ``now``."""
    server.receive_data(client.data_to_send(), now=now)
    events = client.receive_data(server.data_to_send())
    assert isinstance(events[0], HandshakeCompleted)
    assert isinstance(server.receive_data(client.data_to_send(), now=now)[0], HandshakeCompleted)


# -- ServerConnection --------------------------------------------------------------------
def test_handshake_times_out_at_its_deadline_whatever_bytes_trickle_in():
    server = ServerConnection(handshake_timeout=5, idle_timeout=30, now=T0)
    assert server.get_timer() == T0 + 5
    c0c1 = ClientConnection().data_to_send()
    assert server.receive_data(c0c1[:100], now=T0 + 4) == []
    assert server.get_timer() == T0 + 5  # handshake bytes do not buy time
    assert server.handle_timer(T0 + 4.999) == [] and server.state is State.HANDSHAKE_C0C1
    assert server.handle_timer(T0 + 5) == [TimedOut("handshake timed out")]
    assert server.state is State.CLOSED and server.get_timer() is None
    assert server.data_to_send() == b""  # queues nothing: the glue just drops it
    assert server.handle_timer(T0 + 99) == [] and server.receive_data(c0c1[100:]) == []


def test_handshake_deadline_holds_while_waiting_for_c2():
    client, server = ClientConnection(), ServerConnection(handshake_timeout=5, now=T0)
    server.receive_data(client.data_to_send(), now=T0 + 1)
    assert server.state is State.HANDSHAKE_C2 and server.get_timer() == T0 + 5
    server.data_to_send()  # S0+S1+S2, taken before the deadline
    assert server.handle_timer(T0 + 5) == [TimedOut("handshake timed out")]
    assert server.data_to_send() == b""


def test_idle_deadline_starts_at_the_handshake_and_traffic_moves_it():
    client = ClientConnection()
    server = ServerConnection(handshake_timeout=5, idle_timeout=30, now=T0)
    opened(client, server, now=T0 + 2)
    assert server.state is State.OPEN and server.get_timer() == T0 + 32
    assert server.handle_timer(T0 + 31) == []
    client.send(chunks.window_ack_size(2_500_000))
    [event] = server.receive_data(client.data_to_send(), now=T0 + 20)
    assert isinstance(event, MessageReceived)
    assert server.get_timer() == T0 + 50
    assert server.handle_timer(T0 + 49.999) == [] and server.state is State.OPEN
    assert server.handle_timer(T0 + 50) == [TimedOut("idle timed out")]
    assert server.state is State.CLOSED and server.get_timer() is None
    assert server.data_to_send() == b""


def test_receive_without_now_keeps_the_clock_where_it_was():
    client = ClientConnection()
    server = ServerConnection(idle_timeout=30, now=T0)
    opened(client, server, now=T0 + 2)
    client.send(chunks.window_ack_size(2_500_000))
    server.receive_data(client.data_to_send())  # a caller that does not pass time
    assert server.get_timer() == T0 + 32


def test_no_timeouts_no_timer_and_a_closed_connection_has_none():
    client, server = ClientConnection(), ServerConnection()
    assert server.get_timer() is None and server.handle_timer(1e12) == []
    server = ServerConnection(handshake_timeout=5, now=T0)
    opened(client, server, now=T0 + 1)
    assert server.get_timer() is None  # no idle timeout given
    server = ServerConnection(handshake_timeout=5, idle_timeout=30, now=T0)
    opened(ClientConnection(), server, now=T0 + 1)
    server.reject_connect(1.0, {"code": "NetConnection.Connect.Rejected"})
    assert server.get_timer() is None and server.handle_timer(T0 + 1e6) == []


# -- ProtocolSniffer ---------------------------------------------------------------------
def test_a_silent_connection_times_out_waiting_for_its_first_byte():
    sniffer = ProtocolSniffer(timeout=5, now=T0)
    assert sniffer.get_timer() == T0 + 5
    assert sniffer.receive_data(b"", now=T0 + 1) == [] and sniffer.get_timer() == T0 + 5
    assert sniffer.handle_timer(T0 + 4.999) == []
    assert sniffer.handle_timer(T0 + 5) == [TimedOut("no first byte")]
    assert sniffer.get_timer() is None and sniffer.handle_timer(T0 + 6) == []
    assert sniffer.receive_data(b"\x03", now=T0 + 6) == []  # too late: decided nothing


def test_the_first_byte_decides_once_and_ends_the_deadline():
    for first, protocol in ((b"\x03", RTMP), (b"\x06", RTMP), (b"GET / HTTP/1.1\r\n", HTTP),
                            (b"\x16\x03\x01", HTTP)):
        for rtsp in (False, True):
            sniffer = ProtocolSniffer(timeout=5, now=T0, rtsp=rtsp)
            assert sniffer.receive_data(first, now=T0 + 1) == [Sniffed(protocol, first)]
            assert sniffer.get_timer() is None and sniffer.handle_timer(T0 + 99) == []
            assert sniffer.receive_data(b"more") == []
    assert ProtocolSniffer(timeout=None, now=T0).get_timer() is None


def test_rtsp_and_http_share_methods_and_are_told_apart_by_the_version():
    for line, protocol in ((b"OPTIONS rtsp://lb/live/s RTSP/1.0\r\n", RTSP),
                           (b"OPTIONS /whip/s HTTP/1.1\r\n", HTTP),
                           (b"DESCRIBE rtsp://lb:554/a?x=RTSP RTSP/1.0\n", RTSP),
                           (b"GET /redirect/RTSP/1.0 HTTP/1.1\r\n", HTTP)):
        sniffer = ProtocolSniffer(timeout=5, now=T0, rtsp=True)
        assert sniffer.receive_data(line + b"CSeq: 1\r\n\r\n") == [
            Sniffed(protocol, line + b"CSeq: 1\r\n\r\n")]
    # without RTSP on the port, a request line is HTTP's to answer, whatever its version
    assert ProtocolSniffer(timeout=5, now=T0).receive_data(b"OPTIONS * RTSP/1.0\r\n") == [
        Sniffed(HTTP, b"OPTIONS * RTSP/1.0\r\n")]


def test_a_request_line_sent_a_byte_at_a_time_is_kept_whole_and_bounded():
    sniffer = ProtocolSniffer(timeout=5, now=T0, rtsp=True, max_line=64)
    line = b"DESCRIBE rtsp://lb/live/s RTSP/1.0\r\n"
    for i in range(len(line) - 1):
        assert sniffer.receive_data(line[i:i + 1]) == []
    assert sniffer.buffered == len(line) - 1
    assert sniffer.receive_data(line[-1:]) == [Sniffed(RTSP, line)]
    assert sniffer.buffered == 0
    # no line end within max_line bytes: HTTP's to refuse (414), the bytes handed on
    sniffer = ProtocolSniffer(timeout=5, now=T0, rtsp=True, max_line=64)
    assert sniffer.receive_data(b"G" * 40) == []
    assert sniffer.receive_data(b"E" * 40) == [Sniffed(HTTP, b"G" * 40 + b"E" * 40)]
    # one that stops half way is handed to HTTP at the deadline, to answer it 408
    sniffer = ProtocolSniffer(timeout=5, now=T0, rtsp=True)
    sniffer.receive_data(b"OPTIONS rtsp://lb/ RT")
    assert sniffer.handle_timer(T0 + 4.9) == []
    assert sniffer.handle_timer(T0 + 5) == [Sniffed(HTTP, b"OPTIONS rtsp://lb/ RT")]
    assert sniffer.started == T0 and sniffer.get_timer() is None


# -- the asyncio glue: one loop timer per connection -------------------------------------
class ManualClockLoop(asyncio.SelectorEventLoop):
    """A real loop whose ``time()`` is ``now``, set by the test; records every call_at."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.handles: list[asyncio.TimerHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, *args: Any,
                context: Any = None) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        self.handles.append(handle)
        return handle

    def armed(self) -> list[float]:
        """The deadlines of the timers still pending."""
        return [h.when() for h in self.handles if not h.cancelled() and h in self._scheduled]


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 50000),
                "sockname": ("127.0.0.1", 1935)}.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed or self.aborted


def run_on_manual_clock(test: Any) -> None:
    with asyncio.Runner(loop_factory=ManualClockLoop) as runner:
        runner.run(test(runner.get_loop()))


async def turn(times: int = 3) -> None:
    """Let the loop run what is due (timers included) without waiting for anything."""
    for _ in range(times):
        await asyncio.sleep(0)


def service_on(loop: ManualClockLoop, **rtmp: Any) -> RtmpService:
    """The RTMP front on an empty pool, its clocks the loop's."""
    core = BalancerCore(SharedKey("timers"), timeout=5.0, grace=0.5, max_clock_skew=30.0)
    config = RtmpConfig(**{"handshake_timeout_ms": 5000, "idle_timeout_ms": 30_000, **rtmp})
    return RtmpService(core, config, Clocks(wall=lambda: loop.now, monotonic=loop.time))


def connected_session(loop: ManualClockLoop,
                      **rtmp: Any) -> tuple[RtmpService, RtmpSession, FakeTransport]:
    service = service_on(loop, **rtmp)
    session = service.session()
    transport = FakeTransport()
    session.connection_made(transport)
    return service, session, transport


async def dropped_at(loop: ManualClockLoop, transport: FakeTransport, deadline: float) -> None:
    """Still open just before ``deadline``, dropped (aborted) by the loop's timer at it."""
    loop.now = deadline - 0.01
    await turn()
    assert not transport.aborted
    loop.now = deadline
    await turn()
    assert transport.aborted


def wanted(session: RtmpSession | FrontConnection) -> float | None:
    return session._timer.at


def test_a_session_holds_one_timer_re_armed_from_its_connection():
    async def test(loop: ManualClockLoop) -> None:
        # (the connect deadline out of the way: the idle one is watched here)
        service, session, transport = connected_session(loop, connect_timeout_ms=600_000)
        assert loop.armed() == [T0 + 5] == [session.conn.get_timer()]

        client = ClientConnection()
        loop.now = T0 + 1
        session.data_received(client.data_to_send())  # C0+C1: the same deadline
        client.receive_data(bytes(transport.written))
        assert len(loop.handles) == 1 and loop.armed() == [T0 + 5]

        loop.now = T0 + 2
        session.data_received(client.data_to_send())  # C2: open, the idle deadline
        assert session.conn.state is State.OPEN
        # a later deadline leaves the armed handle: it re-arms when it fires
        assert wanted(session) == T0 + 32 and loop.armed() == [T0 + 5]

        loop.now = T0 + 10
        client.send(chunks.window_ack_size(2_500_000))
        session.data_received(client.data_to_send())  # traffic moves it
        assert wanted(session) == T0 + 40 == session.conn.get_timer()
        assert len(loop.armed()) == 1  # one loop timer per connection, always

        written = len(transport.written)
        assert service.counters["timeouts"] == 0
        await dropped_at(loop, transport, T0 + 40)  # handle_timer, abort, no re-arm
        assert service.counters["timeouts"] == 1
        assert session.conn.state is State.CLOSED and loop.armed() == []
        assert len(transport.written) == written and not transport.closed
        session.connection_lost(None)
        assert service.active == set()
    run_on_manual_clock(test)


def test_an_earlier_deadline_replaces_the_armed_handle_and_a_cancel_removes_it():
    async def test(loop: ManualClockLoop) -> None:
        seen: list[float] = []
        timer = ConnectionTimer(loop, seen.append, Deadlines())
        timer.update(T0 + 30)
        timer.update(T0 + 40)  # later: no loop work
        assert loop.armed() == [T0 + 30] and len(loop.handles) == 1
        timer.update(T0 + 5)  # earlier: re-armed
        assert loop.armed() == [T0 + 5]
        timer.update(None)  # none: the handle may fire, finding nothing
        loop.now = T0 + 5
        await turn()
        assert seen == [] and loop.armed() == []
        timer.update(T0 + 8)
        timer.cancel()
        assert loop.armed() == [] and timer.at is None
    run_on_manual_clock(test)


def test_a_session_that_never_sends_connect_is_dropped_at_the_connect_deadline():
    async def test(loop: ManualClockLoop) -> None:
        service, session, transport = connected_session(loop, connect_timeout_ms=5000)
        client = ClientConnection()
        session.data_received(client.data_to_send())
        client.receive_data(bytes(transport.written))
        loop.now = T0 + 1
        session.data_received(client.data_to_send())  # C2: open at T0 + 1
        assert wanted(session) == T0 + 6
        for second in range(2, 6):  # a byte of chatter a second buys nothing
            loop.now = T0 + second
            client.send(chunks.window_ack_size(2_500_000))
            session.data_received(client.data_to_send())
            assert wanted(session) == T0 + 6
        await dropped_at(loop, transport, T0 + 6)
        assert service.counters["timeouts"] == 1
        assert session.conn.state is State.CLOSED
    run_on_manual_clock(test)


def test_a_session_silent_in_its_handshake_times_out_by_the_loop_timer():
    async def test(loop: ManualClockLoop) -> None:
        service, session, transport = connected_session(loop)
        session.data_received(bytes((handshake.VERSION,)))
        await dropped_at(loop, transport, T0 + 5)
        assert service.counters["timeouts"] == 1
        assert service.counters["protocol_errors"] == 0 and loop.armed() == []
    run_on_manual_clock(test)


def client_port_on(loop: ManualClockLoop) -> tuple[ClientPort, RtmpService]:
    """The client port, its first-byte deadline (the HTTP head timeout) 5 s."""
    service = service_on(loop)
    port = ClientPort(service.core, HttpConfig(head_timeout_ms=5000), ClientsConfig(),
                      service, service.clocks)
    return port, service


def test_a_shared_port_connection_that_never_speaks_times_out():
    async def test(loop: ManualClockLoop) -> None:
        port, _ = client_port_on(loop)
        conn = FrontConnection(port, Listener(http=True, rtmp=True, rtsp=True))
        transport = FakeTransport()
        conn.connection_made(transport)
        assert port.connections == {conn} and loop.armed() == [T0 + 5]
        assert port.admission.total == 1
        await dropped_at(loop, transport, T0 + 5)
        assert port.counters["silent_timeouts"] == 1
        assert port.connections == set() and loop.armed() == []
        conn.connection_lost(None)
        assert port.admission.total == 0
    run_on_manual_clock(test)


def test_the_first_byte_hands_the_timer_over_to_the_session():
    async def test(loop: ManualClockLoop) -> None:
        port, service = client_port_on(loop)
        conn = FrontConnection(port, Listener(http=True, rtmp=True, rtsp=True))
        transport = FakeTransport()
        conn.connection_made(transport)
        loop.now = T0 + 3
        conn.data_received(ClientConnection().data_to_send()[:10])
        [session] = service.active
        assert transport.protocol is session and port.connections == set()
        # the sniffer's timer is gone; the session's handshake deadline counts from now
        assert loop.armed() == [T0 + 8] == [session.conn.get_timer()]
        assert wanted(conn) is None
        assert port.admission.total == 1  # the session holds the admission now
        session.connection_lost(None)
        assert port.admission.total == 0
    run_on_manual_clock(test)


def test_a_timer_run_early_by_the_loop_still_reaches_its_deadline():
    async def test(loop: ManualClockLoop) -> None:
        seen: list[float] = []
        timer = ConnectionTimer(loop, seen.append, Deadlines())
        timer.update(T0 + 5)
        timer.update(T0 + 5)  # the same deadline: the same handle
        assert len(loop.handles) == 1
        loop.now = T0 + 5 - 1e-9  # within a clock's resolution of it
        loop.handles[0]._run()  # what the loop does with a handle it runs (early)
        assert seen == [T0 + 5] and timer.at is None
    run_on_manual_clock(test)


def test_many_timers_share_one_loop_handle_and_each_fires_at_its_own_deadline():
    async def test(loop: ManualClockLoop) -> None:
        deadlines = Deadlines()
        seen: list[tuple[str, float]] = []
        timers = {name: ConnectionTimer(loop, lambda now, n=name: seen.append((n, now)),
                                        deadlines)
                  for name in "abcde"}
        # b and c in one bucket (10 ms apart), a later, d earliest, e moved later
        for name, at in (("a", T0 + 9), ("b", T0 + 5), ("c", T0 + 5.01), ("d", T0 + 3),
                         ("e", T0 + 4)):
            timers[name].update(at)
        timers["e"].update(T0 + 7)  # later: no loop work, filed again when it comes up
        assert loop.armed() == [T0 + 3] and len(deadlines) == 5
        for now in (T0 + 3, T0 + 4, T0 + 5, T0 + 5.01, T0 + 7, T0 + 9):
            loop.now = now
            await turn()
            assert len(loop.armed()) <= 1  # one loop handle for all of them
        assert seen == [("d", T0 + 3), ("b", T0 + 5), ("c", T0 + 5.01), ("e", T0 + 7),
                        ("a", T0 + 9)]
        assert loop.armed() == [] and len(deadlines) == 0
    run_on_manual_clock(test)


def test_removing_every_timer_cancels_the_shared_handle():
    async def test(loop: ManualClockLoop) -> None:
        deadlines = Deadlines()
        first, second = (ConnectionTimer(loop, lambda now: None, deadlines) for _ in "12")
        first.update(T0 + 5)
        second.update(T0 + 2)  # earlier: the handle moves
        assert loop.armed() == [T0 + 2]
        second.cancel()
        assert loop.armed() == [T0 + 2]  # (it comes up and finds only the later one)
        first.close()
        assert loop.armed() == [] and len(deadlines) == 0
    run_on_manual_clock(test)


# -- the budgets before connect, in the codec ----------------------------------------------
def test_connect_deadline_and_reason_and_connect_ends_it():
    client = ClientConnection()
    server = ServerConnection(handshake_timeout=5, idle_timeout=30, connect_timeout=5, now=T0)
    opened(client, server, now=T0 + 1)
    assert server.get_timer() == T0 + 6
    assert server.handle_timer(T0 + 6) == [TimedOut("no connect in time")]

    client, server = ClientConnection(), ServerConnection(idle_timeout=30, connect_timeout=5,
                                                          now=T0)
    opened(client, server, now=T0 + 1)
    client.connect("redirect", "rtmp://lb/redirect")
    server.receive_data(client.data_to_send(), now=T0 + 2)
    assert server.connected and server.get_timer() == T0 + 32  # the idle deadline alone


def test_bytes_before_connect_are_bounded_and_so_is_what_a_proxy_keeps():
    client = ClientConnection()
    server = ServerConnection(keep_raw=True, max_before_connect=4096, now=T0)
    opened(client, server, now=T0)
    events = []
    for _ in range(40):  # audio messages, never a connect
        client.send(chunks.Message(8, b"\xaf" * 200, csid=4, stream_id=1))
        events += server.receive_data(client.data_to_send(), now=T0)
        if server.state is State.CLOSED:
            break
    assert [e for e in events if isinstance(e, ConnectionFailed)] == [
        ConnectionFailed("no connect within 4096 bytes")]
    assert len(server.raw_after_handshake) <= 4096 + 300


def test_set_chunk_size_under_the_floor_is_refused():
    client = ClientConnection()
    server = ServerConnection(min_chunk_size=128, now=T0)
    opened(client, server, now=T0)
    client.send(chunks.Message(chunks.SET_CHUNK_SIZE, (1).to_bytes(4, "big"), csid=2))
    [event] = server.receive_data(client.data_to_send(), now=T0)
    assert isinstance(event, ConnectionFailed) and "chunk size 1 outside 128" in event.reason
    c = ClientConnection()
    ok2 = ServerConnection(min_chunk_size=128, now=T0)
    opened(c, ok2, now=T0)
    c.send(chunks.Message(chunks.SET_CHUNK_SIZE, (128).to_bytes(4, "big"), csid=2))
    assert ok2.receive_data(c.data_to_send(), now=T0) and ok2.state is State.OPEN


# -- a big answer goes out as fast as the client reads ---------------------------------------
def big_pool_port(loop: ManualClockLoop) -> ClientPort:
    """The client port with enough edges that serverInfoXML is made in steps."""
    port, service = client_port_on(loop)
    key = SharedKey("timers")
    for i in range(3 * serverinfo.PER_SLICE):
        report = Report(EdgeState.RUNNING, f"10.0.{i >> 8}.{i & 255}:1935", 0, 2500)
        service.core.receive_datagram(ReportSealer(uuid.UUID(int=i + 1)).seal(
            report, key, now=1_800_000_000.0), now=loop.now, wall=1_800_000_000.0)
    return port


SERVER_INFO = b"GET /loadbalancer?serverInfoXML HTTP/1.1\r\n\r\n"


def test_a_client_that_reads_nothing_of_a_big_answer_is_dropped_after_the_idle_timeout():
    async def test(loop: ManualClockLoop) -> None:
        port = big_pool_port(loop)
        conn = FrontConnection(port, Listener(http=True, rtmp=True, rtsp=True))
        transport = FakeTransport()
        conn.connection_made(transport)
        conn.data_received(SERVER_INFO)
        conn.pause_writing()  # the client's socket is full: it reads nothing
        await turn(50)  # the document is made (in steps); nothing may be written
        assert transport.written == b"" and not transport.aborted
        loop.now += port.limits.keepalive_timeout - 0.01
        await turn()
        assert not transport.aborted
        loop.now += 0.02
        await turn()
        assert transport.aborted and port.http_counters["write_timeouts"] == 1
        conn.connection_lost(None)
    run_on_manual_clock(test)


def test_a_big_answer_is_written_a_slice_a_turn_and_waits_while_the_client_is_full():
    async def test(loop: ManualClockLoop) -> None:
        port = big_pool_port(loop)
        conn = FrontConnection(port, Listener(http=True, rtmp=True, rtsp=True))
        transport = FakeTransport()
        conn.connection_made(transport)
        front.protocol.WRITE_SLICE, slice_was = 4096, front.protocol.WRITE_SLICE
        try:
            conn.data_received(SERVER_INFO)
            await turn(10)
            assert 0 < len(transport.written) <= 10 * 4096  # a slice a turn, not all at once
            conn.pause_writing()
            await turn(10)
            paused_at = len(transport.written)
            await turn(10)
            assert len(transport.written) == paused_at  # waits while the client is full
            conn.resume_writing()
            await turn(2000)
        finally:
            front.protocol.WRITE_SLICE = slice_was
        head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
        assert b"HTTP/1.1 200 OK" in head and body.endswith(b"</LoadBalancerServerInfo>")
        assert f"Content-Length: {len(body)}".encode() in head
        assert body.count(b"<Server>") == 3 * serverinfo.PER_SLICE
        conn.data_received(b"GET /loadbalancer HTTP/1.1\r\n\r\n")  # and the next request
        assert bytes(transport.written).count(b"HTTP/1.1 200 OK") == 2
        assert not transport.aborted and port.http_counters["write_timeouts"] == 0
    run_on_manual_clock(test)


# -- what the attack on issue 14's change found ------------------------------------------
def test_a_request_line_sniffed_slowly_keeps_the_heads_deadline_from_the_start():
    async def test(loop: ManualClockLoop) -> None:
        port, _ = client_port_on(loop)  # HTTP's head timeout 5 s, RTSP's 10 s
        for line, head in ((b"GET /loadbalancer HTTP/1.1\r\n", 5),
                           (b"OPTIONS * RTSP/1.0\r\n", 10)):
            conn = FrontConnection(port, Listener(http=True, rtmp=True, rtsp=True))
            transport = FakeTransport()
            conn.connection_made(transport)
            loop.now = T0 + 4  # the line took 4 s to come: the rest of the head has less
            conn.data_received(line)
            assert wanted(conn) == T0 + head, line
            loop.now = T0
    run_on_manual_clock(test)


def test_a_client_that_reads_no_answers_is_not_read_either():
    async def test(loop: ManualClockLoop) -> None:
        port, _ = client_port_on(loop)
        conn = FrontConnection(port, Listener(http=True, rtmp=True, rtsp=True))
        transport = FakeTransport()
        conn.connection_made(transport)
        request = b"GET /crossdomain.xml HTTP/1.1\r\n\r\n"
        conn.data_received(request)
        conn.pause_writing()  # its socket is full: it reads nothing
        answered = len(transport.written)
        conn.data_received(request * 100)  # what it sends meanwhile waits, unanswered
        await turn()
        assert len(transport.written) == answered and transport.paused
        conn.resume_writing()  # it reads again: its requests are answered again
        await turn(10)
        assert transport.written.count(b"HTTP/1.1 200") == 101
    run_on_manual_clock(test)
