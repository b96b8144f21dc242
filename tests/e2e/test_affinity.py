"""Stream affinity against real pull edges: the origin counts the pulls.

An nginx-rtmp origin carries four streams (one ffmpeg publishing all four); three
nginx-rtmp edges pull a stream from it when a player asks for it (on demand), each with
an ``lbmgmt edge`` whose nginx-rtmp monitor reports its load and its streams. 24 ffmpeg
players, six per stream, arriving in rounds (one of each stream per round, as viewers
of several streams do), ask the balancer for an edge naming their stream
(``GET /loadbalancer?stream=live/sN``) and play from it.

Least-load spreading puts each stream's six viewers on all three edges, up to 12 pulls
from the origin (run here too: more than 6). With ``stream-affinity`` the origin's own
stat page must show at most 6
(the issue's target; 4, one per stream, where an edge takes two streams). Edges report
every 0.5 s; the players' arrival is not timed (each waits for nothing but the
balancer's answer).
"""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET

import pytest

from tests.e2e import nginx
from tests.e2e.fleet import HOST, Fleet, wait_until
from tests.e2e.test_rtmp import FFMPEG, HAVE, ready
from tests.e2e.test_topology import servers  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not HAVE, reason="needs ffmpeg and nginx-rtmp")]

STREAMS = [f"s{n}" for n in range(4)]
PER_STREAM = 6
EDGES = ("a", "b", "c")


def clients(stat: bytes) -> dict[str, tuple[int, int]]:
    """Per stream of application ``live``: (players, publishers) on a stat page."""
    out = {}
    for stream in ET.fromstring(stat).iterfind("server/application[name='live']/live/stream"):
        players = publishers = 0
        for client in stream.iterfind("client"):
            if client.find("publishing") is not None:
                publishers += 1
            else:
                players += 1
        out[stream.findtext("name") or ""] = (players, publishers)
    return out


async def stat(fleet: Fleet, server: nginx.NginxRtmp) -> dict[str, tuple[int, int]]:
    async with fleet.http.get(server.stat_url) as r:
        return clients(await r.read())


@pytest.mark.parametrize("redirector", ["stream-affinity", "concurrent-connects"])
async def test_a_streams_viewers_concentrate_and_the_origin_serves_at_most_six_pulls(
        fleet: Fleet, servers, background, redirector):  # noqa: F811
    origin = nginx.NginxRtmp(fleet.workdir / "origin", applications=f"""application live {{
      live on;
      allow publish {HOST};
      deny publish all;
    }}""")
    servers.append(origin.start())
    lb = fleet.balancer(config={"balancer": {"redirector": redirector}})
    edges: dict[str, nginx.NginxRtmp] = {}
    for n, name in enumerate(EDGES):
        edge = nginx.NginxRtmp(fleet.workdir / f"edge-{name}", applications=f"""application live {{
          live on;
          deny publish all;
          pull {origin.rtmp_url("live")} live=1;
        }}""")
        servers.append(edge.start())
        edges[name] = edge
        # fixed GUIDs: the same ring every run
        (fleet.workdir / f"{name}.guid").write_text(f"{uuid.UUID(int=0x16_00 + n)}\n")
        fleet.edge(name, [lb], address=f"{HOST}:{edge.rtmp_port}", interval_ms=500,
                   monitor={"type": "nginx-rtmp", "url": edge.stat_url,
                            "applications": ["live"]})
    # one encoder, four streams on the origin
    background(*FFMPEG, "-re", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
               "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
               "-pix_fmt", "yuv420p", "-g", "10", "-an", "-map", "0:v", "-f", "tee",
               "|".join(f"[f=flv]{origin.rtmp_url(f'live/{s}')}" for s in STREAMS))
    await ready(fleet, lb, len(EDGES))

    async def published() -> bool:
        on_origin = await stat(fleet, origin)
        return all(on_origin.get(s, (0, 0))[1] == 1 for s in STREAMS)
    await wait_until(published, what="four streams published on the origin")

    async def all_available() -> bool:
        rows = (await fleet.servers(lb)).values()
        return [row["available"] for row in rows] == ["true"] * len(EDGES)
    await wait_until(all_available, what="every edge available")

    by_port = {edge.rtmp_port: name for name, edge in edges.items()}
    placed: dict[str, set[str]] = {s: set() for s in STREAMS}
    for _ in range(PER_STREAM):
        for s in STREAMS:
            async with fleet.http.get(f"{lb.url}/loadbalancer?stream=live/{s}") as r:
                body = await r.text()
            assert r.status == 200 and body.startswith("redirect="), body
            address = body.removeprefix("redirect=")
            placed[s].add(by_port[int(address.rpartition(":")[2])])
            background(*FFMPEG, "-i", f"rtmp://{address}/live/{s}", "-c", "copy",
                       "-f", "null", "-")

    async def every_player_on_its_edge() -> bool:
        total = 0
        for edge in edges.values():
            total += sum(players for players, _ in (await stat(fleet, edge)).values())
        return total == len(STREAMS) * PER_STREAM
    await wait_until(every_player_on_its_edge, what="24 players playing on the edges")

    # every edge a stream went to pulls it from the origin once (a pull starts as its
    # first player arrives): what the balancer decided is what the origin serves
    pulls = sum(len(where) for where in placed.values())

    async def pulling() -> bool:
        return sum(players for players, _ in (await stat(fleet, origin)).values()) == pulls
    await wait_until(pulling, what=f"{pulls} pulls on the origin")
    choices = await asyncio.to_thread(lb.attribute, "StreamChoices")
    if redirector == "stream-affinity":
        assert pulls <= 6, placed
        assert choices["carrier"] >= len(STREAMS) * PER_STREAM - pulls
    else:  # the same fleet, the same arrivals, least load: the stream counts nothing
        assert pulls > 6, placed
        assert sum(choices.values()) == 0
