"""Big status pages never hold the loop: serverInfoXML and /metrics are made in slices.

Each is checked three ways: the sliced document is the one made at once; the
loop ran between the slices (a ticker counts its turns while the page is made);
and a cached page is served again within ``max_age`` but never across a change
of who is in the pool. Time is the test's.
"""

from __future__ import annotations

import asyncio
import uuid

from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.front.protocol import ServerInfoCache
from lbmgmt.balancer.mbeans import BalancerBeans
from lbmgmt.balancer.serverinfo import PER_SLICE, render_server_info
from lbmgmt.clocks import Clocks
from lbmgmt.management import metrics
from lbmgmt.management.metrics import Metrics, render_metrics
from lbmgmt.management.notifications import NotificationBuffer
from lbmgmt.management.server import MBeanServer
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey

KEY = SharedKey("slices")
WALL = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pool(edges: int, clock: Clock) -> BalancerCore:
    core = BalancerCore(KEY, timeout=600.0, grace=0.5, max_clock_skew=30.0)
    for i in range(edges):
        add_edge(core, clock, i)
    return core


def add_edge(core: BalancerCore, clock: Clock, i: int) -> None:
    sealer = ReportSealer(uuid.UUID(int=i + 1))
    report = Report(EdgeState.RUNNING, f"10.0.{i >> 8}.{i & 255}:1935", i % 7, 2500)
    core.receive_datagram(sealer.seal(report, KEY, now=WALL), now=clock(), wall=WALL)


async def made_while_ticking(make) -> tuple[bytes, int]:
    """What ``make()`` gives, and how many loop turns ran while it was made."""
    turns = 0
    done = False

    def tick() -> None:
        nonlocal turns
        if not done:
            turns += 1
            asyncio.get_running_loop().call_soon(tick)

    asyncio.get_running_loop().call_soon(tick)
    try:
        return await make(), turns
    finally:
        done = True


async def test_a_big_server_info_is_made_in_slices_and_equals_the_whole():
    clock = Clock()
    edges = 4 * PER_SLICE + 7
    core = pool(edges, clock)
    cache = ServerInfoCache(core, Clocks(wall=clock, monotonic=clock), max_age=1.0)
    document, turns = await made_while_ticking(cache.document)
    assert document == render_server_info(core, clock())
    assert document.count(b"<Server>") == edges
    assert turns >= edges // PER_SLICE  # the loop ran between the slices


async def test_a_big_server_info_is_cached_for_max_age_but_not_across_a_join():
    clock = Clock()
    core = pool(PER_SLICE + 1, clock)
    cache = ServerInfoCache(core, Clocks(wall=clock, monotonic=clock), max_age=1.0)
    first = await cache.document()
    clock.now += 0.5
    assert await cache.document() is first and cache.made == 1
    clock.now += 0.6
    assert await cache.document() is not first and cache.made == 2
    second = await cache.document()
    add_edge(core, clock, 10_000)  # a join: the cached page would miss it
    third = await cache.document()
    assert third is not second and third.count(b"<Server>") == PER_SLICE + 2


async def test_a_small_server_info_is_always_fresh():
    clock = Clock()
    core = pool(3, clock)
    cache = ServerInfoCache(core, Clocks(wall=clock, monotonic=clock), max_age=60.0)
    before = await cache.document()
    core.redirect("http", clock())
    after = await cache.document()
    assert before != after and after == render_server_info(core, clock())


async def test_big_metrics_are_read_in_slices_and_equal_the_whole():
    clock = Clock()
    edges = 3 * metrics.PER_SLICE
    core = pool(edges, clock)
    server = MBeanServer(NotificationBuffer(10), clock=clock)
    BalancerBeans(core, Clocks(wall=clock, monotonic=clock), server)
    page = Metrics(server, max_age=1.0, monotonic=clock)
    text, turns = await made_while_ticking(page.text)
    assert text == render_metrics(server)
    assert text.count(b"lbmgmt_server_load{") == edges
    assert turns >= edges // metrics.PER_SLICE
    clock.now += 0.5
    assert await page.text() is text  # cached
    clock.now += 0.6
    assert await page.text() is not text
