"""The balancer's RTMP applications, in-process, with the sans-IO client over a real socket."""

from __future__ import annotations

import asyncio

import pytest

from lbmgmt.balancer.rtmp_config import RtmpApp, RtmpConfig
from lbmgmt.fleet.inprocess import InProcessFleet
from lbmgmt.rtmp.client import ClientConnection
from lbmgmt.rtmp.commands import command_message
from lbmgmt.rtmp.server import CommandReceived, HandshakeCompleted


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
