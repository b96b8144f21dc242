"""The balancer's RTMP applications, in-process, with the sans-IO client over a real socket."""

from __future__ import annotations

import asyncio

import pytest

from lbmgmt.balancer.rtmp_config import RtmpApp, RtmpConfig
from lbmgmt.fleet.inprocess import InProcessFleet
from lbmgmt.rtmp.client import ClientConnection
from lbmgmt.fleet.ports import free_port
from lbmgmt.rtmp.commands import command_message, status
from lbmgmt.rtmp.server import CommandReceived, HandshakeCompleted, ServerConnection


@pytest.fixture
async def balancer_with(tmp_path):
    """A balancer with these RTMP ``apps`` and made-up edges at these addresses."""
    fleet = InProcessFleet(tmp_path)

    async def start(apps: dict[str, RtmpApp], edges: list[str]):
        daemon = await fleet.start_balancer(mgmt_port=None, rtmp=RtmpConfig(apps=apps))
        for address in edges:
            fleet.report(address)
        return daemon
    yield start
    await fleet.stop()


async def session(port: int, app: str, after_connect=()):
    """Connect to ``app``, send ``after_connect`` commands, return every command received."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = ClientConnection()
    writer.write(conn.data_to_send())
    received = []
    try:
        while data := await asyncio.wait_for(reader.read(65536), 30):
            for event in conn.receive_data(data):
                if isinstance(event, HandshakeCompleted):
                    conn.connect(app, f"rtmp://127.0.0.1:{port}/{app}")
                elif isinstance(event, CommandReceived):
                    received.append(event.command)
                    if event.command.name == "_result" and event.command.transaction_id == 1:
                        for message in after_connect:
                            conn.send(message)
            writer.write(conn.data_to_send())
    finally:
        writer.close()
    return received


async def test_redirect_on_play_when_connect_is_accepted(balancer_with):
    daemon = await balancer_with({"tv": RtmpApp("tv", redirect_app_name="hd",
                                                redirect_on_connect=False)}, ["edge1:1940"])
    port = daemon.http_address[1]
    commands = await session(port, "tv", [
        command_message("createStream", 2.0, None),
        command_message("play", 3.0, None, "channel7", stream_id=1)])
    result, created, status = commands
    assert (result.name, result.args[0]["code"]) == ("_result",
                                                     "NetConnection.Connect.Success")
    assert (created.name, created.transaction_id, created.args) == ("_result", 2.0, [1.0])
    info = status.args[0]
    assert status.name == "onStatus" and info["code"] == "NetStream.Play.Failed"
    assert info["ex"]["redirect"] == "rtmp://edge1:1940/hd/channel7"
    assert "rtmp://edge1:1940/hd/channel7" in info["description"]
    assert daemon.core.redirects_served["rtmp"] == 1


async def test_no_available_edge_is_a_rejection_without_ex(balancer_with):
    daemon = await balancer_with({"redirect": RtmpApp("redirect")}, [])
    [error] = await session(daemon.http_address[1], "redirect")
    info = error.args[0]
    assert error.name == "_error" and info["code"] == "NetConnection.Connect.Rejected"
    assert "no available server" in info["description"] and "ex" not in info
    assert daemon.rtmp.counters["no_server"] == 1


async def test_redirect_counts_toward_the_chosen_edge(balancer_with):
    daemon = await balancer_with({"redirect": RtmpApp("redirect")}, ["a:1935", "b:1935"])
    urls = []
    for _ in range(4):
        [error] = await session(daemon.http_address[1], "redirect")
        urls.append(error.args[0]["ex"]["redirect"])
    assert sorted(urls) == ["rtmp://a:1935/live"] * 2 + ["rtmp://b:1935/live"] * 2
    assert sorted(e.redirects_since_report for e in daemon.core.registry) == [2, 2]


class StubEdge(asyncio.Protocol):
    """An RTMP edge that accepts any connect, says who it is in the answer and hangs up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.conn = ServerConnection()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, CommandReceived) and event.command.name == "connect":
                self.conn.accept_connect(event.command.transaction_id, status(
                    "status", "NetConnection.Connect.Success", f"edge {self.name}"))
                self.transport.write(self.conn.data_to_send())
                self.transport.close()  # (the client reads to the end)
                return
        self.transport.write(self.conn.data_to_send())


async def test_the_proxy_tries_the_next_edge_when_the_chosen_one_is_unreachable(tmp_path):
    fleet = InProcessFleet(tmp_path)
    loop = asyncio.get_running_loop()
    edge = await loop.create_server(lambda: StubEdge("B"), "127.0.0.1", 0)
    dead = free_port()  # nothing listens there
    try:
        daemon = await fleet.start_balancer(mgmt_port=None, rtmp=RtmpConfig(
            apps={"live": RtmpApp("live", mode="proxy")}, proxy_suspect_ms=60_000))
        dead_address = f"127.0.0.1:{dead}"
        live_address = f"127.0.0.1:{edge.sockets[0].getsockname()[1]}"
        fleet.report(dead_address, load=0)  # the least loaded: chosen first
        fleet.report(live_address, load=5)
        [result] = await session(daemon.http_address[1], "live")
        assert (result.name, result.args[0]["description"]) == ("_result", "edge B")
        counters = daemon.rtmp.counters
        assert (counters["edge_unreachable"], counters["proxied"],
                counters["protocol_errors"]) == (1, 1, 0)
        # suspect: every front's next client goes elsewhere, though it is still least loaded
        assert [fleet.redirect() for _ in range(3)] == [live_address] * 3
        assert daemon.core.status(daemon.clocks.monotonic()).available_count == 1
    finally:
        edge.close()
        await fleet.stop()


async def test_the_proxy_gives_up_after_its_retries_and_says_which_edges_it_tried(tmp_path):
    fleet = InProcessFleet(tmp_path)
    try:
        daemon = await fleet.start_balancer(mgmt_port=None, rtmp=RtmpConfig(
            apps={"live": RtmpApp("live", mode="proxy")}, proxy_retries=1))
        dead = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        for address in dead:
            fleet.report(address)
        [error] = await session(daemon.http_address[1], "live")
        info = error.args[0]
        assert error.name == "_error" and info["code"] == "NetConnection.Connect.Failed"
        tried = info["description"].partition("(tried ")[2].rstrip(")").split(", ")
        assert len(tried) == 2 and set(tried) <= set(dead)  # the first choice and 1 more
        assert daemon.rtmp.counters["edge_unreachable"] == 2
        assert daemon.rtmp.counters["protocol_errors"] == 0
    finally:
        await fleet.stop()


async def test_play_names_the_stream_for_stream_affinity(tmp_path):
    """With redirect_on_connect = false the balancer knows the stream at play: an edge
    carrying it (as the edge's application names it) gets the viewer, though busier."""
    from lbmgmt.streams import stream_key
    fleet = InProcessFleet(tmp_path)
    try:
        daemon = await fleet.start_balancer(
            mgmt_port=None, redirector="stream-affinity", rtmp=RtmpConfig(apps={
                "tv": RtmpApp("tv", redirect_app_name="hd", redirect_on_connect=False)}))
        fleet.report("edge1:1940", load=0)
        fleet.report("edge2:1940", load=4, streams=(stream_key("hd/channel7"),))
        for name, edge in (("channel7", "edge2"), ("channel7?token=x", "edge2"),
                           ("other", "edge1")):
            *_, status = await session(daemon.http_address[1], "tv", [
                command_message("createStream", 2.0, None),
                command_message("play", 3.0, None, name, stream_id=1)])
            assert status.args[0]["ex"]["redirect"].startswith(f"rtmp://{edge}:1940/hd/")
    finally:
        await fleet.stop()
