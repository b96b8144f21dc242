"""RTMP on the balancer with real clients: ffmpeg, nginx-rtmp edges, curl on the same port.

scripts/test installs ffmpeg and nginx with libnginx-mod-rtmp and sets
LBMGMT_REQUIRE_REAL_CLIENTS=1, so on CI a missing client fails these tests
instead of skipping them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from tests.e2e import nginx
from tests.e2e.fleet import DEADLINE, HOST, Balancer, Fleet, wait_until
from tests.e2e.test_management import Rpc, up

HAVE = shutil.which("ffmpeg") is not None and nginx.available()
if not HAVE and os.environ.get("LBMGMT_REQUIRE_REAL_CLIENTS"):
    raise RuntimeError("ffmpeg and nginx-rtmp are required (apt-get install ffmpeg nginx "
                       "libnginx-mod-rtmp)")
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not HAVE, reason="needs ffmpeg and nginx-rtmp")]
FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]


def publish(background, url: str, seconds: int = 30) -> subprocess.Popen:
    return background(*FFMPEG, "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=15",
                      "-t", str(seconds), "-c:v", "flv1", "-g", "5", "-an", "-f", "flv", url)


def play(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FFMPEG, "-analyzeduration", "1000000", "-i", url, "-frames:v", "3",
                           "-f", "null", "-"], capture_output=True, text=True, timeout=DEADLINE)


def streams(edge: nginx.NginxRtmp) -> dict[str, int]:
    """Streams on an nginx-rtmp edge, from its stat page, with their client counts."""
    root = ET.fromstring(urllib.request.urlopen(edge.stat_url, timeout=DEADLINE).read())
    return {s.findtext("name"): int(s.findtext("nclients") or 0)
            for s in root.iterfind("server/application/live/stream")}


def lbmgmt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lbmgmt", *args], capture_output=True,
                          text=True, timeout=DEADLINE)


# A redirect application and a proxy one, named as the edges name theirs.
PROXY_APPS = {"rtmp": {"apps": {"redirect": {}, "live": {"mode": "proxy"}}}}


async def ready(fleet: Fleet, lb: Balancer, count: int) -> None:
    async def listed():
        return len(await fleet.servers(lb)) == count
    await wait_until(listed, what=f"{count} edge(s) listed")


def nginx_edge(fleet: Fleet, lb: Balancer, name: str, server: nginx.NginxRtmp):
    return fleet.edge(name, [lb], address=f"{HOST}:{server.rtmp_port}",
                      monitor={"type": "nginx-rtmp", "url": server.stat_url})


async def test_ffmpeg_on_the_redirect_app_fails_fast_and_prints_the_edge_url(fleet):
    lb = fleet.balancer()
    fleet.edge("e", [lb], address="edge1.example:19351")
    await ready(fleet, lb, 1)
    r = await asyncio.to_thread(
        subprocess.run, [*FFMPEG, "-loglevel", "info", "-i",
                         f"rtmp://{HOST}:{lb.http_port}/redirect/mystream", "-f", "null", "-"],
        capture_output=True, text=True, timeout=DEADLINE)
    assert r.returncode != 0
    assert "Connection rejected: redirect to rtmp://edge1.example:19351/live" in r.stderr
    r = await asyncio.to_thread(
        subprocess.run, [*FFMPEG, "-loglevel", "info", "-i",
                         f"rtmp://{HOST}:{lb.http_port}/nosuchapp/s", "-f", "null", "-"],
        capture_output=True, text=True, timeout=DEADLINE)
    assert r.returncode != 0 and "application 'nosuchapp' does not exist" in r.stderr


async def test_resolve_then_publish_and_play_reach_a_real_nginx_rtmp_edge(fleet, edges,
                                                                          background):
    lb = fleet.balancer()
    edge_server = edges("a")
    nginx_edge(fleet, lb, "a", edge_server)
    await ready(fleet, lb, 1)
    r = await asyncio.to_thread(lbmgmt, "resolve",
                                f"rtmp://{HOST}:{lb.http_port}/redirect/camera1")
    assert r.returncode == 0, r.stderr
    url = r.stdout.strip()
    assert url == f"rtmp://{HOST}:{edge_server.rtmp_port}/live/camera1"
    publish(background, url)

    async def on_edge():
        return "camera1" in await asyncio.to_thread(streams, edge_server)
    await wait_until(on_edge, what="stream on the nginx-rtmp edge")
    played = await asyncio.to_thread(play, url)
    assert played.returncode == 0, played.stderr

    async def load_reported():  # the nginx-rtmp monitor counts the publisher
        return (await fleet.servers(lb))[f"{HOST}:{edge_server.rtmp_port}"]["load"] == "1"
    await wait_until(load_reported, what="nginx-rtmp load reported")


async def test_two_nginx_rtmp_edges_of_unequal_load_the_lighter_is_chosen(fleet, edges,
                                                                          background):
    lb = fleet.balancer()
    busy, light = edges("busy"), edges("light")
    nginx_edge(fleet, lb, "busy", busy)
    nginx_edge(fleet, lb, "light", light)
    await ready(fleet, lb, 2)
    for i in range(2):
        publish(background, busy.rtmp_url(f"live/load{i}"))

    async def loads():
        servers = await fleet.servers(lb)
        return (servers[f"{HOST}:{busy.rtmp_port}"]["load"],
                servers[f"{HOST}:{light.rtmp_port}"]["load"]) == ("2", "0")
    await wait_until(loads, what="loads 2 and 0 reported")
    for stream in ("v1", "v2"):  # the lighter edge takes both before they even out
        r = await asyncio.to_thread(lbmgmt, "resolve",
                                    f"rtmp://{HOST}:{lb.http_port}/redirect/{stream}")
        assert r.stdout.strip() == f"rtmp://{HOST}:{light.rtmp_port}/live/{stream}"


async def test_publish_and_play_through_the_proxy_app(fleet, edges, background):
    lb = fleet.balancer(config=PROXY_APPS)
    edge_server = edges("p")
    nginx_edge(fleet, lb, "p", edge_server)
    await ready(fleet, lb, 1)
    via_lb = f"rtmp://{HOST}:{lb.http_port}/live/proxied"
    publish(background, via_lb)

    async def on_edge():
        return "proxied" in await asyncio.to_thread(streams, edge_server)
    await wait_until(on_edge, what="proxied stream on the edge")
    played = await asyncio.to_thread(play, via_lb)  # playing through the proxy too
    assert played.returncode == 0, played.stderr
    rpc = Rpc(fleet.session, lb.mgmt_url)
    counters = await rpc.ok("getAttribute", "lbmgmt:type=Balancer", "RtmpConnections")
    assert counters["proxied"] >= 2


def http_raw(port: int, data: bytes) -> bytes:
    """Send, then read until the server closes (the last request says Connection: close;
    no half-close: aiohttp, shared port or not, drops a connection on client EOF)."""
    with socket.create_connection((HOST, port), timeout=DEADLINE) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


async def test_http_keeps_working_on_the_shared_port(fleet):
    lb = fleet.balancer()
    fleet.edge("e", [lb], address="edge1.example")
    await ready(fleet, lb, 1)

    async def rtmp_clients():
        return await asyncio.gather(*(asyncio.to_thread(
            lbmgmt, "resolve", f"rtmp://{HOST}:{lb.http_port}/redirect/s{i}") for i in range(4)))

    async def curls():
        return await asyncio.gather(*(asyncio.to_thread(
            subprocess.run, ["curl", "-sS", f"http://{HOST}:{lb.http_port}/loadbalancer"],
            capture_output=True, text=True, timeout=DEADLINE) for _ in range(8)))
    resolved, curled = await asyncio.gather(rtmp_clients(), curls())
    assert all(r.stdout.strip().startswith("rtmp://edge1.example:") for r in resolved)
    assert all(c.stdout == "redirect=edge1.example" for c in curled)

    # keep-alive: several requests on one connection
    for _ in range(3):
        async with fleet.session.get(f"{lb.url}/loadbalancer") as resp:
            assert await resp.text() == "redirect=edge1.example"
    # pipelining: two requests in one write, two answers in order
    out = await asyncio.to_thread(http_raw, lb.http_port,
                                  b"GET /loadbalancer HTTP/1.1\r\nHost: x\r\n\r\n"
                                  b"GET /crossdomain.xml HTTP/1.1\r\nHost: x\r\n"
                                  b"Connection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 2 and out.index(b"redirect=") < out.index(b"policy")
    # a large request
    async with fleet.session.get(f"{lb.url}/redirect/{'p' * 4000}",
                                 allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"].endswith("p" * 4000)


def read_until_closed(sock: socket.socket) -> None:
    """Read (and drop) what the balancer sends until it closes the connection."""
    sock.settimeout(DEADLINE)
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(65536):
            pass


async def test_garbage_on_1935_is_closed_and_never_takes_the_balancer_down(fleet):
    lb = fleet.balancer(config={"rtmp": {"handshake_timeout_ms": 500,
                                         "idle_timeout_ms": 1000},
                                "http": {"head_timeout_ms": 1000}})
    fleet.edge("e", [lb], address="edge1.example")
    await ready(fleet, lb, 1)
    payloads = (b"\x03" + os.urandom(5000),  # handshake then garbage chunks
                b"\x06" + os.urandom(2000),  # RTMPE: unsupported
                b"\x03" + bytes(1536) + bytes(1536) + b"\xff" * 300,  # bad chunks
                b"\x00" + os.urandom(2999),  # not HTTP either (no RTMP version byte first)
                b"",  # connects and says nothing
                b"\x03" + bytes(1536) + bytes(1536))  # handshake, then idles
    hostile = []
    try:
        for payload in payloads:
            s = socket.create_connection((HOST, lb.http_port), timeout=DEADLINE)
            hostile.append(s)
            if payload:
                s.sendall(payload)
        # while those are open, real clients are served
        r = await asyncio.to_thread(lbmgmt, "resolve",
                                    f"rtmp://{HOST}:{lb.http_port}/redirect/x")
        assert r.returncode == 0 and r.stdout.startswith("rtmp://edge1.example")
        async with fleet.session.get(f"{lb.url}/loadbalancer") as resp:
            assert await resp.text() == "redirect=edge1.example"
        # and every hostile connection is closed by the balancer (an error or a timeout)
        await asyncio.gather(*(asyncio.to_thread(read_until_closed, s) for s in hostile))
    finally:
        for s in hostile:
            s.close()
    assert lb.running
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)

    async def all_closed():
        counters = await rpc.ok("getAttribute", "lbmgmt:type=Balancer", "RtmpConnections")
        return counters["active"] == 0
    await wait_until(all_closed, what="no RTMP connection left open")
    counters = await rpc.ok("getAttribute", "lbmgmt:type=Balancer", "RtmpConnections")
    assert counters["protocol_errors"] >= 3
    assert counters["timeouts"] >= 1  # the one that idles after its handshake
    clients = await rpc.ok("getAttribute", "lbmgmt:type=Balancer", "ClientConnections")
    assert clients["silent_timeouts"] >= 1  # the silent one
    http = await rpc.ok("getAttribute", "lbmgmt:type=Balancer", "HttpConnections")
    assert http["bad_requests"] >= 1  # neither RTMP nor HTTP: a 400


async def test_connection_cap(fleet):
    lb = fleet.balancer(config={"rtmp": {"max_connections": 2, "listen": "127.0.0.1:0",
                                         "handshake_timeout_ms": 60_000}})
    rpc = Rpc(fleet.session, lb.mgmt_url)
    await up(fleet, rpc)
    address = await rpc.ok("getAttribute", "lbmgmt:type=Balancer", "RtmpAddress")
    port = int(address.rsplit(":", 1)[1])
    assert port != lb.http_port  # its own port when configured apart
    held = [socket.create_connection((HOST, port)) for _ in range(2)]
    try:
        for s in held:
            s.sendall(b"\x03")

        async def both_held():
            counters = await rpc.ok("getAttribute", "lbmgmt:type=Balancer", "RtmpConnections")
            return counters["active"] == 2
        await wait_until(both_held, what="two RTMP connections active")
        with socket.create_connection((HOST, port), timeout=DEADLINE) as third:
            third.sendall(b"\x03")
            with contextlib.suppress(ConnectionResetError):  # refused at once: aborted
                assert third.recv(10) == b""
        counters = await rpc.ok("getAttribute", "lbmgmt:type=Balancer", "RtmpConnections")
        assert counters["refused"] == 1 and counters["active"] == 2
    finally:
        for s in held:
            s.close()


async def test_a_killed_nginx_takes_its_edge_out_until_it_is_back(fleet, edges):
    lb = fleet.balancer()
    servers = {name: edges(name) for name in ("doomed", "fine")}
    daemons = {name: nginx_edge(fleet, lb, name, server) for name, server in servers.items()}

    async def available(expected: dict[str, str]) -> bool:
        rows = await fleet.servers(lb)
        return {name: rows.get(d.address, {}).get("available")
                for name, d in daemons.items()} == expected
    await wait_until(lambda: available({"doomed": "true", "fine": "true"}), what="both in")
    doomed = servers["doomed"]
    assert doomed.proc is not None
    doomed.proc.kill()  # SIGKILL: no goodbye, its ports simply stop answering
    doomed.proc.wait(10)
    await wait_until(lambda: available({"doomed": "false", "fine": "true"}),
                     what="the killed nginx's edge out")
    row = (await fleet.servers(lb))[daemons["doomed"].address]
    assert row["state"] == "PAUSED" and row["unhealthy"].startswith("monitor:")
    assert {await fleet.redirect(lb) for _ in range(10)} == {daemons["fine"].address}
    doomed.start()  # the same ports again
    await wait_until(lambda: available({"doomed": "true", "fine": "true"}),
                     what="its edge back once nginx answers again")
