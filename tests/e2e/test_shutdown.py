"""SIGTERM stops a daemon process whatever its clients hold open, on both event loops.

The balancer is taken down with idle keep-alive HTTP clients, idle RTMP clients,
clients that never said a word, a parked management long poll and a live proxy
relay (ffmpeg publishing through it to a real nginx-rtmp edge); the edge with idle
management clients and a parked long poll. Each must exit 0 and close every one of
those connections, and no stop step may have had to be given up on (a warning in its
log). On Python 3.11 an exiting process closes its sockets whatever the order, so there
the order itself is asserted in-process (tests/unit/test_shutdown.py); scripts/test runs
both files on Python 3.12 too where the machine has it, whose ``wait_closed()`` waits for
every connection and so catches a shutdown in the wrong order here as well.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.clients import all_see_eof, idle_rtmp_client, keep_alive_client, long_poll
from tests.e2e.fleet import DEADLINE, HOST, Fleet, wait_until
from tests.e2e.test_management import Rpc, parked_polls, up
from tests.e2e.test_rtmp import HAVE, PROXY_APPS, nginx_edge, publish, ready, streams

pytestmark = pytest.mark.e2e


async def exits(proc) -> int:
    return await asyncio.to_thread(proc.wait, DEADLINE)


@pytest.mark.skipif(not HAVE, reason="needs ffmpeg and nginx-rtmp")
async def test_sigterm_stops_a_balancer_with_every_kind_of_client_connected(fleet, edges,
                                                                            background):
    lb = fleet.balancer(config=PROXY_APPS)
    edge_server = edges("p")
    nginx_edge(fleet, lb, "p", edge_server)
    await ready(fleet, lb, 1)
    rpc = Rpc(fleet.session, lb.mgmt_url)
    publisher = publish(background, f"rtmp://{HOST}:{lb.http_port}/live/relayed", seconds=600)

    async def relaying():
        return "relayed" in await asyncio.to_thread(streams, edge_server)
    await wait_until(relaying, what="a stream relayed through the proxy to the edge")

    http = [await keep_alive_client(lb.http_port, "GET", "/loadbalancer") for _ in range(50)]
    rtmp = [await idle_rtmp_client(lb.http_port) for _ in range(20)]
    silent = [await asyncio.open_connection(HOST, lb.http_port) for _ in range(5)]
    mgmt = [await keep_alive_client(lb.mgmt_port, "POST", "/jsonrpc",
                                    b'{"jsonrpc":"2.0","id":1,"method":"version"}')
            for _ in range(3)]
    poll = await long_poll(lb.mgmt_port)
    await parked_polls(rpc, 1)
    writers = [w for _, w in http + rtmp + silent + mgmt + [poll]]
    try:
        lb.signal(signal.SIGTERM)
        assert await exits(lb) == 0
        await all_see_eof({"keep-alive http": [r for r, _ in http],
                           "idle rtmp": [r for r, _ in rtmp],
                           "silent": [r for r, _ in silent],
                           "management": [r for r, _ in mgmt] + [poll[0]]})
        assert await exits(publisher) != 0  # its relayed connection ended with the balancer
    finally:
        for writer in writers:
            writer.close()
    assert "balancer stopped" in lb.stderr and "stop step" not in lb.stderr


async def test_sigterm_stops_an_edge_with_management_clients_connected(fleet: Fleet):
    lb = fleet.balancer()
    edge = fleet.edge("e", [lb])
    rpc = Rpc(fleet.session, edge.mgmt_url)
    await up(fleet, rpc)
    mgmt = [await keep_alive_client(edge.mgmt_port, "POST", "/jsonrpc",
                                    b'{"jsonrpc":"2.0","id":1,"method":"version"}')
            for _ in range(10)]
    poll = await long_poll(edge.mgmt_port)
    await parked_polls(rpc, 1)
    try:
        edge.signal(signal.SIGTERM)
        assert await exits(edge) == 0
        await all_see_eof({"management": [r for r, _ in mgmt] + [poll[0]]})
    finally:
        for _, writer in mgmt + [poll]:
            writer.close()
    assert "edge stopped" in edge.stderr and "stop step" not in edge.stderr
