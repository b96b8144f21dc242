"""``lbmgmt resolve`` as a shell runs it, against a balancer process and a reporting edge.

Each scheme prints a URL on the edge's host: rtmp:// (a rejected connect, and an
application that accepts it and redirects on play), rtsp://, http:// (``/redirect/``
and ``/loadbalancer``), https:// (through a TLS front whose certificate is checked)
and srt:// (the streamid's stream asked for over HTTP). With an ffmpeg built with
libsrt, ffmpeg publishes over SRT to the edge ``"$(lbmgmt resolve srt://…)"`` names.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from lbmgmt.fleet.ports import free_port
from tests.e2e.fleet import DEADLINE, HOST, Balancer, Fleet, wait_until
from tests.unit.test_resolve import self_signed

pytestmark = pytest.mark.e2e
FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin"]
EDGE = "edge2.example:19350"  # the edge's redirect address: its RTMP port
# one redirect application of each kind
APPS = {"rtmp": {"apps": {"redirect": {}, "late": {"redirect_on_connect": False}}}}


def _ffmpeg_has_srt() -> bool:
    if shutil.which("ffmpeg") is None:
        return False
    listed = subprocess.run(["ffmpeg", "-hide_banner", "-protocols"], capture_output=True,
                            text=True, timeout=60).stdout
    return "srt" in listed.split()


HAVE_SRT = _ffmpeg_has_srt()
if not HAVE_SRT and os.environ.get("LBMGMT_REQUIRE_REAL_CLIENTS"):
    raise RuntimeError("ffmpeg with libsrt is required (apt-get install ffmpeg)")


async def lbmgmt(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "lbmgmt", *args],
                                   capture_output=True, text=True, timeout=DEADLINE)


async def ready(fleet: Fleet, lb: Balancer, count: int) -> None:
    async def listed():
        return len(await fleet.servers(lb)) == count
    await wait_until(listed, what=f"{count} edge(s) listed")


async def test_every_scheme_prints_a_url_on_the_edge(fleet):
    lb = fleet.balancer(config=APPS)
    fleet.edge("e", [lb], address=EDGE)
    await ready(fleet, lb, 1)
    at = f"{HOST}:{lb.http_port}"
    cases = [
        ([f"rtmp://{at}/redirect/s?token=1"], "rtmp://edge2.example:19350/live/s?token=1"),
        ([f"rtmp://{at}/late/s?token=1"], "rtmp://edge2.example:19350/live/s?token=1"),
        ([f"rtsp://{at}/live/s"], "rtsp://edge2.example:19350/live/s"),
        ([f"http://{at}/redirect/hls/s.m3u8"], "http://edge2.example:19350/hls/s.m3u8"),
        ([f"http://{at}/loadbalancer?stream=live/s"], "rtmp://edge2.example:19350/live/s"),
        # the balancer asked over HTTP (--via: it is not on lb.example:1935); the port and
        # the query as given, the host the edge's
        (["--via", at, "srt://lb.example:9000?streamid=#!::r=live/s,m=publish"],
         "srt://edge2.example:9000?streamid=#!::r=live/s,m=publish"),
        (["--via", at, "srt://lb.example:9000?streamid=read:live/s:viewer:pa55&latency=200"],
         "srt://edge2.example:9000?streamid=read:live/s:viewer:pa55&latency=200"),
    ]
    done = await asyncio.gather(*(lbmgmt("resolve", *args) for args, _ in cases))
    for (args, printed), r in zip(cases, done, strict=True):
        assert (r.returncode, r.stdout, r.stderr) == (0, printed + "\n", ""), args


async def test_errors_are_one_line_on_stderr_and_status_1(fleet):
    lb = fleet.balancer()  # no edge
    at = f"{HOST}:{lb.http_port}"
    nobody = f"{HOST}:{free_port()}"
    cases = [
        (["--via", at, "srt://lb:9000?streamid=read:s"], "HTTP 503 Service Unavailable"),
        ([f"http://{at}/redirect/s"], "HTTP 503 Service Unavailable"),
        (["--via", nobody, "srt://lb:9000?streamid=read:s"], f"cannot connect to {nobody}"),
    ]
    await asyncio.to_thread(lb.wait_ready)
    done = await asyncio.gather(*(lbmgmt("resolve", *args) for args, _ in cases))
    for (args, error), r in zip(cases, done, strict=True):
        assert r.returncode == 1 and r.stdout == "", args
        assert r.stderr.startswith("lbmgmt resolve: ") and r.stderr.count("\n") == 1, r.stderr
        assert error in r.stderr, (args, r.stderr)


async def tls_front(context: ssl.SSLContext, port: int) -> asyncio.Server:
    """TLS on a port of its own, relayed in plain to ``port`` (the balancer's)."""
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer),
                             return_exceptions=True)
    return await asyncio.start_server(relay, HOST, 0, ssl=context)


async def test_https_through_a_tls_front_checks_its_certificate(fleet, tmp_path: Path):
    lb = fleet.balancer()
    fleet.edge("e", [lb], address=EDGE)
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    await ready(fleet, lb, 1)
    async with await tls_front(context, lb.http_port) as front:
        url = f"https://{HOST}:{front.sockets[0].getsockname()[1]}/redirect/hls/s.m3u8"
        trusted, untrusted = await asyncio.gather(
            lbmgmt("resolve", "--cafile", str(cert), url), lbmgmt("resolve", url))
    assert (trusted.returncode, trusted.stdout) == (
        0, "http://edge2.example:19350/hls/s.m3u8\n"), trusted.stderr
    assert untrusted.returncode == 1 and "TLS certificate not verified" in untrusted.stderr


def udp_bound(host: str, port: int) -> bool:
    """Whether a UDP socket is bound to ``host:port`` (IPv4), from /proc/net/udp."""
    address = int.from_bytes(socket.inet_aton(host), sys.byteorder)
    local = f"{address:08X}:{port:04X}"
    with open("/proc/net/udp") as table:
        return any(line.split()[1] == local for line in list(table)[1:])


@pytest.mark.skipif(not HAVE_SRT, reason="this ffmpeg has no libsrt (ffmpeg -protocols "
                                         "lists no srt)")
async def test_ffmpeg_publishes_over_srt_to_the_edge_resolve_names(fleet, background):
    lb = fleet.balancer()
    edge_host = "127.0.0.2"  # a loopback address of its own: only the resolved URL gets there
    srt_port = free_port(socket.SOCK_DGRAM, host=edge_host)
    fleet.edge("e", [lb], address=f"{edge_host}:19350")  # (its RTMP port: unused here)
    await ready(fleet, lb, 1)
    # the edge: ffmpeg as an SRT listener, taking one publisher's frames
    edge = background(*FFMPEG, "-loglevel", "info", "-f", "mpegts",
                      "-i", f"srt://{edge_host}:{srt_port}?mode=listener",
                      "-frames:v", "5", "-f", "null", "-")

    async def listening() -> bool:
        return udp_bound(edge_host, srt_port) or edge.poll() is not None
    await wait_until(listening, what="the SRT listener")
    assert edge.poll() is None, edge.stderr.read().decode(errors="replace")[-2000:]

    via, url = f"{HOST}:{lb.http_port}", f"srt://{HOST}:{srt_port}?streamid=publish:live/s"
    resolved = await lbmgmt("resolve", "--via", via, url)
    assert resolved.stdout == f"srt://{edge_host}:{srt_port}?streamid=publish:live/s\n", \
        resolved.stderr
    # as a shell runs it: ffmpeg publishes to the URL resolve prints (nothing listens at
    # the URL's own host, 127.0.0.1)
    background("sh", "-c", 'exec ffmpeg -hide_banner -nostdin -loglevel error -re -f lavfi '
               '-i testsrc=size=160x120:rate=10 -t 60 -c:v mpeg2video -f mpegts '
               '"$("$0" -m lbmgmt resolve --via "$1" "$2")"', sys.executable, via, url)
    returncode = await asyncio.to_thread(edge.wait, DEADLINE * 2)
    stderr = edge.stderr.read().decode(errors="replace")
    assert returncode == 0, stderr[-2000:]
    assert "frame=    5" in stderr  # the edge decoded the publisher's frames
