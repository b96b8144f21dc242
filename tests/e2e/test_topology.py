"""An origin/edge fleet, as examples/origin-edge/ sets one up, with real processes.

ffmpeg publishes once to an nginx-rtmp origin; two nginx-rtmp edges pull from it (RTMP
players on demand, HLS all the time), each with an ``lbmgmt edge`` (nginx-rtmp monitor)
reporting to one ``lbmgmt balancer``. Six ffmpeg players come through the balancer,
two each way: ``lbmgmt resolve``, the RTMP proxy application, and ``/redirect/`` for HLS.
Each must decode frames, and the edges' own access logs must show the six spread over
both edges.

In a real fleet every edge is a host of its own, with the same RTMP and HTTP ports on
each (1935 and 8080), which is what the balancer's per-protocol ports assume. Here both
edges share 127.0.0.1, so each gets one port of its own in front of its nginx that passes
a connection to nginx's RTMP port when it opens with an RTMP handshake (0x03) and to its
HTTP port otherwise, as the balancer's own port does. That port is the edge's redirect
address, for RTMP and HLS alike: the balancer has no ``redirect_port`` here, as one port
for every edge's HLS could not reach two edges on one address.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e import nginx
from tests.e2e.fleet import DEADLINE, HOST, Fleet, free_port, wait_until
from tests.e2e.test_rtmp import FFMPEG, HAVE, PROXY_APPS, lbmgmt, ready

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).parents[2] / "examples" / "origin-edge"

STREAM = "camera1"
FRAMES = 10  # each player decodes this many frames: one second of the stream


def origin_applications() -> str:
    """examples/origin-edge/origin.conf's application, on loopback."""
    return f"""application live {{
      live on;
      allow publish {HOST};
      deny publish all;
      allow play {HOST};
      deny play all;
    }}"""


def edge_applications(origin: nginx.NginxRtmp, hls_dir: Path) -> str:
    """examples/origin-edge/edge.conf's applications, with short HLS fragments."""
    at = f"rtmp://{HOST}:{origin.rtmp_port}/live"
    return f"""application live {{
      live on;
      deny publish all;
      pull {at} live=1;
    }}
    application hls {{
      live on;
      deny publish all;
      deny play all;
      pull {at}/{STREAM} name={STREAM} static live=1;
      hls on;
      hls_path {hls_dir};
      hls_fragment 1s;
      hls_playlist_length 4s;
    }}"""


def hls_location(hls_dir: Path) -> str:
    return f"""location /hls/ {{
      alias {hls_dir}/;
      types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
      add_header Cache-Control no-cache;
    }}"""


@pytest.fixture
def servers() -> Iterator[list[nginx.NginxRtmp]]:
    """nginx-rtmp servers started by the test; stopped at its end."""
    started: list[nginx.NginxRtmp] = []
    yield started
    for server in started:
        server.stop()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


@dataclass
class EdgeHost:
    """One loopback port standing for an edge host: RTMP to nginx's RTMP port, the rest
    (HTTP) to its HTTP port."""

    server: nginx.NginxRtmp
    port: int = 0
    listener: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def start(self) -> EdgeHost:
        self.port = free_port()
        self.listener = await asyncio.start_server(self._client, HOST, self.port)
        return self

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            first = await reader.read(1)
            if first:
                port = self.server.rtmp_port if first[0] == 3 else self.server.http_port
                up_reader, upstream = await asyncio.open_connection(HOST, port)
                upstream.write(first)
                await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except OSError:
            return
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()
            self.tasks.discard(task)

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def play(url: str) -> int:
    """Decode FRAMES video frames from ``url`` (ffmpeg follows an HTTP redirect itself);
    the number decoded (one framecrc line each), after asserting ffmpeg exited 0."""
    r = subprocess.run([*FFMPEG, "-analyzeduration", "1000000", "-i", url, "-map", "0:v:0",
                        "-frames:v", str(FRAMES), "-f", "framecrc", "-"],
                       capture_output=True, text=True, timeout=DEADLINE)
    assert r.returncode == 0, f"{url}: {r.stderr}"
    return sum(1 for line in r.stdout.splitlines() if line and not line.startswith("#"))


def log_lines(path: Path) -> list[list[str]]:
    """An access log written in nginx.RTMP_LOG_FORMAT or HTTP_LOG_FORMAT, split."""
    return [line.split("|") for line in
            (path.read_text(errors="replace").splitlines() if path.exists() else [])]


def test_the_origin_edge_examples_load(monkeypatch):
    from lbmgmt.balancer.config import load_balancer_config
    from lbmgmt.edge.config import load_edge_config
    from lbmgmt.edge.monitors import NginxRtmpMonitor
    from lbmgmt.edge.targets import load_targets

    monkeypatch.setenv("EDGE_HOST", "edge1.example.net")
    edge = load_edge_config(EXAMPLES / "edge.toml")
    assert edge.redirect_address == "edge1.example.net:1935"
    assert isinstance(edge.monitor, NginxRtmpMonitor)
    assert edge.monitor.applications == {"live"}
    balancer = load_balancer_config(EXAMPLES / "balancer.toml")
    assert [t.key for t in load_targets(edge.targets_file)] == [balancer.key]
    assert balancer.http.redirect_port == 8080
    assert {name: app.mode for name, app in balancer.rtmp.apps.items()} == {
        "redirect": "redirect", "live": "proxy"}
    assert balancer.rtmp.apps["redirect"].redirect_app_name == "live"


@pytest.mark.skipif(not HAVE, reason="needs ffmpeg and nginx-rtmp")
async def test_publish_once_to_the_origin_and_play_six_ways_over_two_pull_edges(
        fleet: Fleet, servers, background):
    origin = nginx.NginxRtmp(fleet.workdir / "origin", applications=origin_applications())
    servers.append(origin.start())
    hosts: dict[str, EdgeHost] = {}
    for name in ("a", "b"):
        prefix = fleet.workdir / f"edge-{name}"
        hls_dir = prefix / "hls"
        server = nginx.NginxRtmp(prefix, applications=edge_applications(origin, hls_dir),
                                 locations=hls_location(hls_dir), access_logs=True)
        servers.append(server.start())
        hosts[name] = await EdgeHost(server).start()
    try:
        await _six_players(fleet, origin, hosts, background)
    finally:
        for host in hosts.values():
            await host.stop()


async def _six_players(fleet: Fleet, origin: nginx.NginxRtmp, hosts: dict[str, EdgeHost],
                       background) -> None:
    lb = fleet.balancer(config=PROXY_APPS)
    for name, host in hosts.items():
        fleet.edge(name, [lb], address=host.address,
                   monitor={"type": "nginx-rtmp", "url": host.server.stat_url,
                            "applications": ["live"]})
    background(*FFMPEG, "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
               "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
               "-pix_fmt", "yuv420p", "-g", "10", "-an", "-f", "flv",
               origin.rtmp_url(f"live/{STREAM}"))
    await ready(fleet, lb, 2)

    async def both_available() -> bool:  # each monitor read its nginx's stat page
        return [row["available"] for row in (await fleet.servers(lb)).values()] == ["true"] * 2
    await wait_until(both_available, what="both edges available")

    async def playlists() -> bool:  # each edge pulled the stream and cut HLS fragments
        for host in hosts.values():
            async with fleet.http.get(f"http://{host.address}/hls/{STREAM}.m3u8") as r:
                if r.status != 200 or "#EXTINF" not in await r.text():
                    return False
        return True
    await wait_until(playlists, what="an HLS playlist on both edges")

    hls = f"{lb.url}/redirect/hls/{STREAM}.m3u8"
    check = await asyncio.to_thread(
        subprocess.run, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                         f"{hls}?player=check"], capture_output=True, text=True,
        timeout=DEADLINE)
    assert check.stdout in {f"302 http://{h.address}/hls/{STREAM}.m3u8?player=check"
                            for h in hosts.values()}, check.stdout + check.stderr

    async def resolved_then_played(tag: str) -> tuple[str, int]:
        r = await asyncio.to_thread(
            lbmgmt, "resolve", f"rtmp://{HOST}:{lb.http_port}/redirect/{STREAM}?player={tag}")
        assert r.returncode == 0, r.stderr
        url = r.stdout.strip()
        return url, await asyncio.to_thread(play, url)

    async def played(url: str) -> tuple[str, int]:
        return url, await asyncio.to_thread(play, url)

    before = (await asyncio.to_thread(lb.attribute, "HttpConnections"))["requests"]
    proxied = f"rtmp://{HOST}:{lb.http_port}/live/{STREAM}"
    results = dict(zip(
        ("resolve1", "resolve2", "proxy1", "proxy2", "hls1", "hls2"),
        await asyncio.gather(resolved_then_played("resolve1"), resolved_then_played("resolve2"),
                             played(f"{proxied}?player=proxy1"),
                             played(f"{proxied}?player=proxy2"),
                             played(f"{hls}?player=hls1"), played(f"{hls}?player=hls2")),
        strict=True))
    assert {tag: frames for tag, (_, frames) in results.items()} == dict.fromkeys(results,
                                                                                  FRAMES)
    # Each HLS player asked the balancer once: its fragments (and playlist reloads, if it
    # needed any) it took from the edge the 302 named.
    after = (await asyncio.to_thread(lb.attribute, "HttpConnections"))["requests"]
    assert after - before == 2

    # Where each player went, as the edges themselves saw it: an RTMP session is logged
    # when it ends, an HTTP request when it is answered.
    def landed() -> dict[str, set[str]]:
        where: dict[str, set[str]] = {tag: set() for tag in results}
        for name, host in hosts.items():
            for command, app, stream, args, tcurl, sent in log_lines(host.server.rtmp_log):
                tag = args.removeprefix("player=")
                if tag in where and (command, app, stream) == ("PLAY", "live", STREAM):
                    assert int(sent) > 0
                    via = lb.http_port if tag.startswith("proxy") else host.port
                    assert tcurl == f"rtmp://{HOST}:{via}/live"
                    where[tag].add(name)
            for uri, status, _ in log_lines(host.server.http_log):
                tag = uri.partition("?player=")[2]
                if tag in where and uri.startswith(f"/hls/{STREAM}.m3u8?") and status in {
                        "200", "206"}:
                    where[tag].add(name)
        return where

    async def all_logged() -> bool:
        return all(landed().values())
    await wait_until(all_logged, what="every player in an edge's access log")
    where = landed()
    assert all(len(edges) == 1 for edges in where.values()), where
    edge_of = {tag: edges.pop() for tag, edges in where.items()}
    for tag in ("resolve1", "resolve2"):  # the URL resolve printed is the edge it played on
        assert results[tag][0] == (f"rtmp://{hosts[edge_of[tag]].address}/live/{STREAM}"
                                   f"?player={tag}")
    for name, host in hosts.items():  # the edges that took an HLS player served fragments
        if name in {edge_of["hls1"], edge_of["hls2"]}:
            assert any(uri.startswith(f"/hls/{STREAM}-") and uri.endswith(".ts")
                       for uri, _, _ in log_lines(host.server.http_log))
    assert set(edge_of.values()) == set(hosts), edge_of
