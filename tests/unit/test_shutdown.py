"""Stopping cannot hang, and a failed start or a reload leaves nothing behind.

In-process daemons on 127.0.0.1, port 0 everywhere. Nothing here bounds wall
time with an assertion or sleeps to synchronise: conditions are polled with a
generous deadline, and ``asyncio.wait_for(..., HANG)`` only guards against a
hang. On Python 3.11 ``asyncio.Server.wait_closed()`` returns at once whatever
is still connected, so the tests assert the closing itself: every client sees
EOF (or a reset) once ``stop()`` has returned. The stop tests run on asyncio's
loop and on uvloop (each in an ``asyncio.Runner`` of its own).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from lbmgmt import httpserve
from lbmgmt.balancer.config import BalancerConfig, HttpConfig
from lbmgmt.balancer.daemon import BalancerDaemon
from lbmgmt.balancer.relay import relay
from lbmgmt.balancer.rtmp_config import RtmpApp, RtmpConfig
from lbmgmt.edge.config import EdgeConfig
from lbmgmt.edge.daemon import EdgeDaemon, TargetLink
from lbmgmt.edge.monitors import LoadMonitor, ManualMonitor
from lbmgmt.endpoints import Endpoint
from lbmgmt.management.config import ManagementConfig
from lbmgmt.rtmp import handshake
from lbmgmt.rtmp.client import ClientConnection
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey
from tests.clients import (HANG, all_see_eof, idle_rtmp_client, keep_alive_client, long_poll,
                           sees_eof)

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a test dependency
    uvloop = None

KEY = SharedKey("shutdown")
HOST = "127.0.0.1"

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
if uvloop is not None:
    LOOPS["uvloop"] = uvloop.new_event_loop


@pytest.fixture(params=["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    uvloop is None, reason="uvloop not installed"))])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine to completion on a fresh loop of the parametrised kind."""
    def run_on_loop(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(coro)
    return run_on_loop


# -- helpers -------------------------------------------------------------------------
async def until(predicate: Callable[[], bool], what: str, deadline: float = HANG) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``deadline`` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


def steps_given_up(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The stop steps that had to be cut short (timed out or failed) rather than finish."""
    return [getattr(r, "fields", {}).get("step", "?") for r in caplog.records
            if r.getMessage().startswith("stop step")]


def open_sockets() -> set[str]:
    """The sockets this process holds a descriptor for (Linux), as 'socket:[inode]'."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed while listing
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()


class FakeEdge:
    """An RTMP edge that answers the handshake, then reads until its peer goes away."""

    def __init__(self) -> None:
        self.connected = 0
        self.ended: asyncio.Event = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected += 1
        c0c1 = await reader.readexactly(1 + handshake.PACKET)
        writer.write(handshake.server_reply(c0c1[1:], time_ms=0,
                                            random=os.urandom(handshake.PACKET - 8)))
        await sees_eof(reader)  # C2, the client's connect, then nothing: the relay idles
        self.ended.set()
        writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def register_edge(daemon: BalancerDaemon, address: str) -> None:
    sealer = ReportSealer(uuid.uuid4())
    clocks = daemon.clocks
    daemon.core.receive_datagram(sealer.seal(Report(EdgeState.RUNNING, address, 0, 2500), KEY,
                                             now=clocks.wall()),
                                 now=clocks.monotonic(), wall=clocks.wall())
    assert len(daemon.core.registry) == 1


def balancer_config(management_port: int = 0, http_port: int = 0) -> BalancerConfig:
    """Only stop() may close a connection: every idle timeout is out of the test's reach."""
    return BalancerConfig(
        key=KEY, listen=Endpoint(HOST, 0), message_timeout_ms=3_600_000,
        http=HttpConfig(listen=(Endpoint(HOST, http_port),)),
        rtmp=RtmpConfig(apps={"live": RtmpApp("live", mode="proxy")},
                        handshake_timeout_ms=600_000, idle_timeout_ms=86_400_000),
        management=ManagementConfig(Endpoint(HOST, management_port)))


def edge_config(tmp_path: Path, management_port: int = 0,
                monitor: LoadMonitor | None = None) -> EdgeConfig:
    return EdgeConfig(redirect_address="edge.example:1935", targets_file=tmp_path / "targets",
                      guid_file=tmp_path / "guid", message_interval_ms=60_000,
                      monitor=monitor or ManualMonitor(1),
                      management=ManagementConfig(Endpoint(HOST, management_port)))


def blocker() -> socket.socket:
    """A listening socket holding a port, so a daemon's bind to it fails."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    sock.listen()
    return sock


def tcp_port_is_free(port: int) -> bool:
    """Nobody listens there: we can listen on it ourselves (SO_REUSEADDR, as servers do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
            sock.listen()
        except OSError:
            return False
    return True


def udp_port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


async def connection_refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(HOST, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def stopped(stop: Awaitable[None]) -> None:
    try:
        await asyncio.wait_for(stop, HANG)
    except TimeoutError:
        raise AssertionError(f"stop() had not returned after {HANG:.0f} s") from None


# -- the balancer stops, whatever is connected ----------------------------------------------
async def balancer_stops_with_everything_connected() -> None:
    before = open_sockets()
    edge = FakeEdge()
    await edge.start()
    daemon = BalancerDaemon(balancer_config())
    await daemon.start()
    writers: list[asyncio.StreamWriter] = []
    try:
        assert daemon.http_address is not None and daemon.management is not None
        assert daemon.management.address is not None
        port, mgmt_port = daemon.http_address[1], daemon.management.address[1]
        register_edge(daemon, f"{HOST}:{edge.port}")

        http = [await keep_alive_client(port, "GET", "/loadbalancer") for _ in range(50)]
        rtmp = [await idle_rtmp_client(port) for _ in range(20)]
        await until(lambda: len(daemon.rtmp.active) == 20, "20 RTMP sessions")

        # one client proxied to the fake edge, its relay idle both ways
        proxied_reader, proxied_writer = await asyncio.open_connection(HOST, port)
        writers.append(proxied_writer)
        conn = ClientConnection()
        proxied_writer.write(conn.data_to_send())
        conn.receive_data(await proxied_reader.readexactly(1 + 2 * handshake.PACKET))
        conn.connect("live", f"rtmp://{HOST}:{port}/live")
        proxied_writer.write(conn.data_to_send())  # C2 + connect
        await until(lambda: daemon.rtmp.counters["proxied"] == 1, "proxied == 1")
        assert len(daemon.rtmp.relays) == 1
        # a relaying session still counts (its transport handed its socket to the relay)
        await until(lambda: daemon.core.fronts["rtmp"].snapshot()["active"] == 21,
                    "20 idle sessions and the relay active")

        silent = [await asyncio.open_connection(HOST, port) for _ in range(5)]
        await until(lambda: sum(c.http is None for c in daemon.clients.connections) == 5,
                    "5 connections without a byte")

        mgmt = [await keep_alive_client(mgmt_port, "GET", "/metrics") for _ in range(3)]
        poll = await long_poll(mgmt_port)
        await until(lambda: daemon.management.parked_polls == 1, "the long poll parked")

        clients = {"http keep-alive": http, "rtmp idle": rtmp, "silent": silent,
                   "management keep-alive": mgmt, "long poll": [poll]}
        writers += [w for group in clients.values() for _, w in group]
        await stopped(daemon.stop())

        got = await all_see_eof({"proxied": [proxied_reader],
                                 **{k: [r for r, _ in v] for k, v in clients.items()}})
        # nothing more was said to anyone, not even an answer to the long poll
        assert {k: set(v) for k, v in got.items()} == {k: {b""} for k in got}
        try:  # the relay's edge side is closed too
            await asyncio.wait_for(edge.ended.wait(), HANG)
        except TimeoutError:
            raise AssertionError("the proxied edge never saw its relay close") from None
        assert edge.connected == 1
        assert not daemon.rtmp.relays and not daemon.rtmp.active and not daemon.clients.connections
        assert daemon.clients.admission.total == 0  # every admission released
    finally:
        close_all(writers)
        await stopped(daemon.stop())
        edge.close()
    # and not one descriptor left behind, the relay's two sockets included
    await until(lambda: open_sockets() <= before, "every socket closed")


def test_balancer_stop_closes_every_connection_and_relay(run, caplog):
    caplog.set_level(logging.INFO, logger="lbmgmt")
    run(balancer_stops_with_everything_connected())
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("lbmgmt")]
    assert messages.count("balancer stopped") == 1  # the second stop() did nothing
    assert steps_given_up(caplog) == []


# -- the edge likewise ----------------------------------------------------------------------
async def edge_stops_with_clients_connected(tmp_path: Path) -> None:
    edge = EdgeDaemon(edge_config(tmp_path), targets=[])
    await edge.start()
    writers: list[asyncio.StreamWriter] = []
    try:
        assert edge.management is not None and edge.management.address is not None
        port = edge.management.address[1]
        clients = [await keep_alive_client(port, "GET", "/metrics") for _ in range(10)]
        clients.append(await keep_alive_client(port, "POST", "/jsonrpc", json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "version"}).encode()))
        clients.append(await long_poll(port))
        writers += [w for _, w in clients]
        await until(lambda: edge.management.parked_polls == 1, "the long poll parked")

        await stopped(edge.stop())

        got = await all_see_eof({"keep-alive": [r for r, _ in clients[:-1]],
                                 "long poll": [clients[-1][0]]})
        assert {k: set(v) for k, v in got.items()} == {k: {b""} for k in got}
        assert await connection_refused(port)
    finally:
        close_all(writers)
        await stopped(edge.stop())


def test_edge_stop_closes_management_clients_and_long_polls(run, tmp_path, caplog):
    run(edge_stops_with_clients_connected(tmp_path))
    assert steps_given_up(caplog) == []


async def test_a_parked_long_poll_does_not_hold_the_stop(tmp_path, monkeypatch):
    # A request in flight would get an hour to finish, and so would each stop step:
    # only cancelling the parked poll itself lets this stop return.
    monkeypatch.setattr(httpserve, "SHUTDOWN_GRACE", 3600.0)
    monkeypatch.setattr(httpserve, "STOP_STEP_TIMEOUT", 3600.0)
    edge = EdgeDaemon(edge_config(tmp_path), targets=[])
    await edge.start()
    assert edge.management is not None and edge.management.address is not None
    reader, writer = await long_poll(edge.management.address[1])
    try:
        await until(lambda: edge.management.parked_polls == 1, "the long poll parked")
        await stopped(edge.stop())
        assert await all_see_eof({"long poll": [reader]}) == {"long poll": [b""]}
    finally:
        writer.close()


class StuckMonitor(ManualMonitor):
    async def close(self) -> None:
        await asyncio.Event().wait()


async def test_a_stop_step_that_hangs_is_given_up_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(httpserve, "STOP_STEP_TIMEOUT", 0.2)
    edge = EdgeDaemon(edge_config(tmp_path, monitor=StuckMonitor(1)), targets=[])
    await edge.start()
    assert edge.management is not None and edge.management.address is not None
    port = edge.management.address[1]
    await stopped(edge.stop())
    [timed_out] = [r for r in caplog.records if r.getMessage() == "stop step timed out; going on"]
    assert timed_out.levelno == logging.WARNING
    assert timed_out.fields["step"] == "monitor close"  # type: ignore[attr-defined]
    assert await connection_refused(port)  # the steps after it still ran


# -- a failed start leaves no port behind ---------------------------------------------------
async def balancer_start_fails(taken: str) -> None:
    held = blocker()
    port = held.getsockname()[1]
    daemon = BalancerDaemon(balancer_config(**{f"{taken}_port": port}))
    try:
        with pytest.raises(OSError):
            await asyncio.wait_for(daemon.start(), HANG)
    finally:
        held.close()
    assert daemon.udp_address is not None  # bound before the failure, so must be let go
    assert udp_port_is_free(daemon.udp_address[1])
    if taken == "management":
        assert daemon.http_address is not None  # the shared HTTP/RTMP port, likewise
        assert await connection_refused(daemon.http_address[1])
        assert tcp_port_is_free(daemon.http_address[1])
    await stopped(daemon.stop())  # a stop after it does nothing more, and does not fail


@pytest.mark.parametrize("taken", ["management", "http"])
def test_failed_balancer_start_leaves_no_port_open(run, taken):
    run(balancer_start_fails(taken))


class FirstReportFails(EdgeDaemon):
    """(A monitor that raises no longer fails anything: its edge reports itself
    unhealthy. Something else in the first round must.)"""

    async def send_now(self) -> None:
        raise LookupError("the first report is broken")


async def edge_start_fails(tmp_path: Path) -> None:
    # The management port is taken: start fails before anything else is open.
    held = blocker()
    edge = EdgeDaemon(edge_config(tmp_path, held.getsockname()[1]),
                      targets=[])
    try:
        with pytest.raises(OSError):
            await asyncio.wait_for(edge.start(), HANG)
    finally:
        held.close()
    # The first report fails: the management port, opened after it, never is.
    edge = FirstReportFails(edge_config(tmp_path), targets=[])
    with pytest.raises(LookupError, match="first report is broken"):
        await asyncio.wait_for(edge.start(), HANG)
    assert edge.management is None


def test_failed_edge_start_leaves_no_port_open(run, tmp_path):
    run(edge_start_fails(tmp_path))


# -- reload ----------------------------------------------------------------------------------
async def test_reload_cancels_a_removed_targets_pending_connect(tmp_path, caplog):
    targets = tmp_path / "targets"
    targets.write_text("kept.example,1934,shutdown-test-key\ngone.example,1934,shutdown-test-key\n")
    config = edge_config(tmp_path)
    config.management = None
    edge = EdgeDaemon(config)
    started: dict[str, asyncio.Task[None]] = {}

    async def never_resolves(link: TargetLink) -> None:
        task = asyncio.current_task()
        assert task is not None
        started[link.target.host] = task
        await asyncio.Event().wait()

    edge._connect = never_resolves  # type: ignore[method-assign]
    await edge.start()
    try:
        await until(lambda: len(started) == 2, "both targets connecting")
        targets.write_text("kept.example,1934,shutdown-test-key\n")
        edge.reload_targets()
        await asyncio.wait({started["gone.example"]}, timeout=HANG)
        assert started["gone.example"].cancelled(), "the removed target's connect goes on"
        assert not started["kept.example"].done()
        assert [link.target.host for link in edge.links] == ["kept.example"]
    finally:
        await stopped(edge.stop())
    assert started["kept.example"].cancelled()  # and the stop cancels the rest
    # The reload woke the report loop: stop() still ended it at once (asyncio.wait_for on
    # 3.11 would have dropped the cancel and left the loop to its next 60 s tick).
    assert steps_given_up(caplog) == []


# -- the relay itself ------------------------------------------------------------------------
async def test_a_cancelled_relay_ends_both_connections():
    loop = asyncio.get_running_loop()
    client, client_side = socket.socketpair()
    edge_side, edge = socket.socketpair()
    pairs = (client, client_side, edge_side, edge)
    for sock in pairs:
        sock.setblocking(False)
    try:
        task = asyncio.create_task(relay(client_side, edge_side))
        await loop.sock_sendall(client, b"connect")
        assert await asyncio.wait_for(loop.sock_recv(edge, 100), HANG) == b"connect"
        task.cancel()
        await asyncio.wait({task}, timeout=HANG)
        assert task.cancelled()
        # Both peers see EOF though the relay's own sockets are still open (not closed
        # by anyone yet): the relay shut them down on its way out.
        assert await asyncio.wait_for(loop.sock_recv(client, 100), HANG) == b""
        assert await asyncio.wait_for(loop.sock_recv(edge, 100), HANG) == b""
    finally:
        for sock in pairs:
            sock.close()
