"""An edge process's streams and drain, with real processes on loopback.

nginx-rtmp and an ffmpeg publisher: the monitor lists the stream as "app/stream" and
the ``lbmgmt edge`` process reports its key. SIGTERM with ``drain_on_stop``: the
process reports PAUSED with the time left until its load reaches 0, then stops. The
reports are read off a UDP socket as a balancer reads them (ReportReceiver).
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from lbmgmt.edge.monitors import NginxRtmpMonitor
from lbmgmt.status import EdgeState
from lbmgmt.streams import stream_key
from tests.e2e.fleet import DEADLINE, HOST, Fleet, wait_for_text, wait_until
from tests.e2e.test_rtmp import HAVE, publish
from tests.unit.test_edge_streams import KEY, Balancer

pytestmark = [pytest.mark.e2e]


@pytest.fixture
async def receiver():
    lb = await Balancer().start()
    try:
        yield lb
    finally:
        lb.close()


@pytest.mark.skipif(not HAVE, reason="needs ffmpeg and nginx-rtmp")
async def test_nginx_rtmp_lists_a_published_stream_and_the_edge_reports_it(
        fleet: Fleet, edges, background, receiver: Balancer):
    server = edges("s")
    edge = fleet.edge("e", [(HOST, receiver.port, KEY)],
                      monitor={"type": "nginx-rtmp", "url": server.stat_url})
    monitor = NginxRtmpMonitor(server.stat_url)
    try:
        await monitor.read()
        assert monitor.streams() == []  # nothing published yet
        publish(background, server.rtmp_url("live/s"))

        async def listed() -> bool:
            await monitor.read()
            return monitor.streams() == ["live/s"]
        await wait_until(listed, what="nginx-rtmp lists live/s")
        assert monitor.bandwidth() is not None
        report = await receiver.until(lambda r: r.streams is not None)
        assert report.streams == (stream_key("live/s"),) and report.load >= 1
    finally:
        await monitor.close()
        edge.stop()


async def test_sigterm_drains_until_the_load_is_0_then_the_process_exits_0(
        fleet: Fleet, receiver: Balancer):
    edge = fleet.edge("e", [(HOST, receiver.port, KEY)], monitor={"type": "manual", "load": 3},
                      config={"edge": {"drain_on_stop": True, "drain_timeout_ms": 600_000}})
    await asyncio.to_thread(edge.wait_management)
    await receiver.until(lambda r: r.state is EdgeState.RUNNING and r.load == 3)
    edge.signal(signal.SIGTERM)
    report = await receiver.until(lambda r: r.draining is not None)
    assert report.state is EdgeState.PAUSED and 0 < report.draining <= 600_000
    await wait_for_text(edge.workdir / "e.err", "draining: no new clients")
    later = await receiver.until(lambda r: r.draining is not None and r.draining < report.draining)
    assert later.state is EdgeState.PAUSED and edge.running  # still there, still saying so
    await asyncio.to_thread(edge.rpc, "invoke", "lbmgmt:type=Sender", "setLoad", [0])
    await receiver.until(lambda r: r.state is EdgeState.STOPPING)
    assert await asyncio.to_thread(edge.wait, DEADLINE) == 0
    assert "drained: no client left; stopping" in edge.stderr


@pytest.mark.parametrize("second,said", [
    (signal.SIGTERM, "asked again to stop while draining: stopping now"),
    (signal.SIGINT, "asked to stop now while draining: stopping"),  # ctrl-c
])
async def test_a_second_signal_while_draining_stops_at_once(fleet: Fleet, receiver: Balancer,
                                                            second, said):
    edge = fleet.edge("e", [(HOST, receiver.port, KEY)], monitor={"type": "manual", "load": 3},
                      config={"edge": {"drain_on_stop": True}})
    await receiver.until(lambda r: r.state is EdgeState.RUNNING)
    edge.signal(signal.SIGTERM)
    await receiver.until(lambda r: r.draining is not None)
    edge.signal(second)  # the load is still 3
    await receiver.until(lambda r: r.state is EdgeState.STOPPING)
    assert await asyncio.to_thread(edge.wait, DEADLINE) == 0
    assert said in edge.stderr
