"""The client port under attack, against a real balancer: the others are still served.

Each test runs one attack from 127.0.0.2 while a real edge reports and a real
client (curl, ``lbmgmt resolve``) asks from 127.0.0.1; it checks the attack
is cut off by its limit and counted, and that nobody else noticed. Nothing
here bounds how long anything takes: limits are set small so the attacks end
soon, and every wait is for an event with a generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess

from lbmgmt.rtmp import chunks, handshake
from tests.e2e.fleet import DEADLINE, HOST, Balancer, Fleet, wait_until
from tests.e2e.test_management import Rpc, up
from tests.e2e.test_rtmp import lbmgmt, ready

ATTACKER = "127.0.0.2"


def attacker(port: int) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=DEADLINE, source_address=(ATTACKER, 0))
    return s


def handshaken(port: int) -> socket.socket:
    s = attacker(port)
    s.sendall(bytes([handshake.VERSION]) + bytes(handshake.PACKET))
    need, got = 1 + 2 * handshake.PACKET, 0
    while got < need:
        chunk = s.recv(need - got)
        assert chunk, "closed during the handshake"
        got += len(chunk)
    s.sendall(bytes(handshake.PACKET))
    return s


def closed_by_peer(s: socket.socket) -> bool:
    """Reads until the balancer closes the connection (True) or the deadline (False)."""
    s.settimeout(DEADLINE)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def curl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-s", "--max-time", str(DEADLINE), *args, url],
                          capture_output=True, text=True, timeout=DEADLINE + 5)


async def counters(rpc: Rpc, attribute: str) -> dict[str, int]:
    return await rpc.ok("getAttribute", "lbmgmt:type=Balancer", attribute)


async def served(fleet: Fleet, lb: Balancer) -> None:
    """Real clients from 127.0.0.1 get their redirects: HTTP (curl) and RTMP (resolve)."""
    r = await asyncio.to_thread(curl, f"{lb.url}/loadbalancer")
    assert r.stdout == "redirect=edge1.example:1935", r
    r = await asyncio.to_thread(lbmgmt, "resolve", f"rtmp://{HOST}:{lb.http_port}/redirect/x")
    assert r.returncode == 0 and r.stdout.startswith("rtmp://edge1.example"), r


async def balancer(fleet: Fleet, **config) -> tuple[Balancer, Rpc]:
    lb = fleet.balancer(config=config)
    fleet.edge("e", [lb], address="edge1.example:1935")
    await ready(fleet, lb, 1)
    rpc = Rpc(fleet.http, lb.mgmt_url)
    await up(fleet, rpc)
    return lb, rpc


async def test_an_rtmp_flood_without_connect_is_cut_at_its_budget(fleet):
    lb, rpc = await balancer(fleet, rtmp={"max_bytes_before_connect": 16384,
                                          "apps": {"redirect": {}, "live": {"mode": "proxy"}}})
    encoder = chunks.ChunkEncoder()
    audio = b"".join(encoder.encode(chunks.Message(8, b"\xaf" * 1000, csid=4, stream_id=1))
                     for _ in range(64))
    s = await asyncio.to_thread(handshaken, lb.http_port)
    with s:
        def flood() -> None:
            with contextlib.suppress(OSError):
                for _ in range(100):  # far past the budget, unless dropped first
                    s.sendall(audio)
        await asyncio.to_thread(flood)
        assert await asyncio.to_thread(closed_by_peer, s)
    await served(fleet, lb)
    assert (await counters(rpc, "RtmpConnections"))["protocol_errors"] >= 1
    assert len(await fleet.servers(lb)) == 1


async def test_trickling_rtmp_connections_are_capped_per_address_and_dropped_at_connect_deadline(
        fleet):
    lb, rpc = await balancer(fleet, clients={"max_connections_per_address": 20},
                             rtmp={"connect_timeout_ms": 1000})
    socks: list[socket.socket] = []
    try:
        for _ in range(20):
            socks.append(await asyncio.to_thread(handshaken, lb.http_port))
        extra = await asyncio.to_thread(attacker, lb.http_port)  # the 21st from that address
        socks.append(extra)
        assert await asyncio.to_thread(closed_by_peer, extra)
        assert (await counters(rpc, "ClientConnections"))["refused_address"] >= 1
        await served(fleet, lb)  # another address is not limited by the attacker's cap

        async def trickle_until_dropped() -> bool:
            for s in socks[:20]:
                with contextlib.suppress(OSError):
                    s.send(b"\x00")
            return (await counters(rpc, "RtmpConnections"))["active"] == 0
        await wait_until(trickle_until_dropped, interval=0.2,
                         what="every trickling connection dropped at its connect deadline")
        assert (await counters(rpc, "RtmpConnections"))["timeouts"] >= 20
    finally:
        for s in socks:
            s.close()
    assert (await counters(rpc, "ClientConnections"))["active"] <= 1  # our own keep-alive


async def test_a_slowloris_http_head_gets_408_at_the_head_timeout(fleet):
    lb, rpc = await balancer(fleet, http={"head_timeout_ms": 1000})
    socks = [await asyncio.to_thread(attacker, lb.http_port) for _ in range(20)]
    try:
        head = b"GET /loadbalancer HTTP/1.1\r\nX-Slow: " + b"a" * 1000
        sent = 0

        async def trickled_out() -> bool:
            nonlocal sent
            for s in socks:  # the next byte of the head, on each
                with contextlib.suppress(OSError):
                    s.send(head[sent:sent + 1])
            sent += 1
            got = await counters(rpc, "HttpConnections")
            return got["head_timeouts"] >= 20
        await wait_until(trickled_out, interval=0.2, what="20 slow heads timed out")
        for s in socks:
            s.settimeout(DEADLINE)
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                assert s.recv(100).startswith(b"HTTP/1.1 408 ")
        await served(fleet, lb)
    finally:
        for s in socks:
            s.close()


async def test_http_features_as_curl_sees_them(fleet):
    lb, _ = await balancer(fleet)
    head = await asyncio.to_thread(curl, f"{lb.url}/loadbalancer", "-I")
    assert head.stdout.startswith("HTTP/1.1 200 OK") and "Content-Length: 27" in head.stdout
    old = await asyncio.to_thread(curl, f"{lb.url}/loadbalancer", "--http1.0", "-i")
    assert "Connection: close" in old.stdout and old.stdout.endswith("edge1.example:1935")
    both = await asyncio.to_thread(curl, f"{lb.url}/nope", "-v", "-o", "/dev/null",
                                   "--next", f"{lb.url}/loadbalancer")
    assert "Re-using existing connection" in both.stderr or "Reusing existing" in both.stderr
    post = await asyncio.to_thread(curl, f"{lb.url}/loadbalancer", "-X", "POST", "-i")
    assert post.stdout.startswith("HTTP/1.1 405") and "Allow: GET, HEAD" in post.stdout
    long = await asyncio.to_thread(curl, f"{lb.url}/{'a' * 9000}", "-i")
    assert long.stdout.startswith("HTTP/1.1 414")
