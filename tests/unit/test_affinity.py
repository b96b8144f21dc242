"""Stream affinity, max_clients, draining and headroom, through the real core, time by hand.

Edges are made-up senders whose sealed reports go through ``receive_datagram``;
viewers are ``core.redirect`` calls naming their stream. bench/affinity.py plays
the same at scale (200 streams, 20 edges, 10 000 viewers) against least-load.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter

import pytest

from lbmgmt.balancer.affinity import StreamAffinity
from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.redirectors import BUILTIN_REDIRECTORS
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey
from lbmgmt.streams import stream_key

KEY = SharedKey("affinity-tests")
WALL = 1_800_000_000.0


class Pool:
    """A core and made-up edges that report to it."""

    def __init__(self, redirector: str = "stream-affinity", **core: object) -> None:
        self.core = BalancerCore(KEY, timeout=10.0, grace=0.5, max_clock_skew=30.0,
                                 redirector=redirector, **core)  # type: ignore[arg-type]
        self.core.redirector.rng = random.Random(7)
        self.sealers: dict[str, ReportSealer] = {}
        self.now = 100.0

    def report(self, address: str, load: float = 0.0, streams: tuple[str, ...] = (),
               **fields: object) -> None:
        sealer = self.sealers.get(address)
        if sealer is None:
            guid = uuid.UUID(int=int.from_bytes(address.encode()[:16].ljust(16, b"-"), "big"))
            sealer = self.sealers[address] = ReportSealer(guid)
        report = Report(fields.pop("state", EdgeState.RUNNING), address, load, 2500,  # type: ignore[arg-type]
                        fields.pop("capacity", None),  # type: ignore[arg-type]
                        streams=tuple(stream_key(s) for s in streams) or None,
                        **fields)  # type: ignore[arg-type]
        self.core.receive_datagram(sealer.seal(report, KEY, now=WALL + self.now),
                                   now=self.now, wall=WALL + self.now)

    def viewer(self, stream: str | None = None, client: str | None = None) -> str | None:
        entry = self.core.redirect("http", self.now, client, stream)
        return None if entry is None else entry.address


def test_a_named_streams_viewers_go_to_the_edge_that_carries_it_within_the_bound():
    pool = Pool()
    pool.report("a:1935", load=10)
    pool.report("b:1935", load=12, streams=("live/s",))
    pool.report("c:1935", load=10)
    assert pool.viewer("live/s") == "b:1935"  # though a and c carry less
    assert pool.viewer() in ("a:1935", "c:1935")  # no stream named: least load
    # b takes viewers of live/s while load + 1 <= ceil(1.25 * (total + 1) / 3)
    sent = Counter(pool.viewer("live/s") for _ in range(30))
    assert sent["b:1935"] >= 10
    b = pool.core.registry.get(pool.sealers["b:1935"].guid)
    assert b is not None
    total = sum(e.effective_load for e in pool.core.registry)
    assert b.effective_load <= math.ceil(1.25 * total / 3)
    # past it, the stream spilled to one more edge, not to every edge
    assert len(sent) == 2
    assert pool.core.stream_affinity.counters["carrier"] >= 20


def test_before_any_report_lists_it_a_new_streams_viewers_stay_together():
    """Herd-free: the edge this balancer sent the stream to is a carrier at once."""
    pool = Pool()
    for name in "abcde":
        pool.report(f"{name}:1935", load=20)
    first = pool.viewer("live/new")
    assert all(pool.viewer("live/new") == first for _ in range(5))
    assert pool.core.stream_affinity.counters["ring"] == 1


def test_every_balancer_starts_a_stream_on_the_same_edge():
    """The ring is the edges' GUIDs and the stream's name: the same on every balancer."""
    pools = [Pool(), Pool()]
    for pool in pools:
        for name in "abcdefgh":
            pool.report(f"{name}:1935", load=5)
    for n in range(20):
        assert pools[0].viewer(f"live/s{n}") == pools[1].viewer(f"live/s{n}")
    # and different streams start on different edges
    assert len({pools[0].viewer(f"live/t{n}") for n in range(40)}) >= 4


def test_no_edge_exceeds_the_factor_times_the_mean_when_every_viewer_names_a_stream():
    pool = Pool()
    edges = [f"e{i}:1935" for i in range(10)]
    for address in edges:
        pool.report(address)
    rng = random.Random(3)
    streams = [f"live/s{i}" for i in range(6)]
    for _ in range(1000):
        assert pool.viewer(rng.choice(streams[:2] * 10 + streams)) is not None
    loads = [e.effective_load for e in pool.core.registry]
    assert max(loads) <= math.ceil(1.25 * sum(loads) / len(loads))


def test_a_bigger_edge_gets_a_bigger_share_when_every_edge_reports_a_capacity():
    pool = Pool()
    pool.report("small:1935", capacity=100, streams=("live/s",))
    pool.report("big:1935", capacity=300)
    sent = Counter(pool.viewer("live/s") for _ in range(200))
    # small carries the stream, but only to 1.25 x its share of the mean (100/400)
    assert sent["small:1935"] <= math.ceil(1.25 * 200 * 100 / 400)
    assert sent["big:1935"] > 0


@pytest.mark.parametrize("redirector", sorted(BUILTIN_REDIRECTORS))
def test_a_full_edge_gets_no_client_from_any_redirector(redirector):
    pool = Pool(redirector)
    pool.report("full:1935", load=3, max_clients=4, capacity=100)
    pool.report("other:1935", load=50, capacity=100)
    sent = Counter(pool.viewer("live/s") for _ in range(10))
    # the one place left on "full" may be taken, by a redirect counted against it
    assert sent["full:1935"] <= 1 and sent["other:1935"] >= 9
    pool.report("full:1935", load=4, max_clients=4, capacity=100)
    assert all(pool.viewer() == "other:1935" for _ in range(5))
    row = next(r for r in pool.core.status(pool.now).servers if r.address == "full:1935")
    assert row.max_clients == 4 and not row.available


@pytest.mark.parametrize("redirector", sorted(BUILTIN_REDIRECTORS))
def test_the_affinity_option_works_with_every_redirector(redirector):
    pool = Pool(redirector, affinity=True)
    pool.report("a:1935", load=10, capacity=100)
    pool.report("b:1935", load=11, capacity=100, streams=("live/s",))
    assert pool.viewer("live/s") == "b:1935"
    pool.core.set_affinity(False)
    if not BUILTIN_REDIRECTORS[redirector].affinity:
        assert pool.core.wants_streams is False
        assert Counter(pool.viewer("live/s") for _ in range(4))["a:1935"] >= 1


def test_affinity_respects_what_the_redirector_refuses():
    """weighted: an edge at its capacity is full, whatever streams it carries."""
    pool = Pool("weighted", affinity=True)
    pool.report("a:1935", load=0, capacity=100)
    pool.report("b:1935", load=10, capacity=10, streams=("live/s",))
    assert pool.viewer("live/s") == "a:1935"


def test_affinity_stays_inside_the_clients_group_first():
    from lbmgmt.balancer.routing import Routing, RoutingConfig, Rule
    import ipaddress
    routing = Routing(RoutingConfig(rules=(Rule(
        groups=("eu",), networks=(ipaddress.ip_network("10.0.0.0/8"),)),)))
    pool = Pool(routing=routing)
    pool.report("us:1935", load=0, group="us", streams=("live/s",))
    pool.report("eu:1935", load=30, group="eu")
    assert pool.viewer("live/s", client="10.1.2.3") == "eu:1935"
    assert pool.viewer("live/s", client="192.0.2.1") == "us:1935"


def test_a_draining_edge_is_shown_draining_and_gets_no_client():
    pool = Pool()
    pool.report("a:1935", load=5)
    pool.report("d:1935", load=0, state=EdgeState.PAUSED, draining=30_000,
                streams=("live/s",))
    assert pool.viewer("live/s") == "a:1935"
    rows = {r.address: r for r in pool.core.status(pool.now).servers}
    assert rows["d:1935"].state == "DRAINING" and rows["a:1935"].state == "RUNNING"


def test_headroom_sums_what_available_edges_can_still_take():
    pool = Pool()
    pool.report("a:1935", load=30, capacity=100)
    pool.report("b:1935", load=10, capacity=100, max_clients=40)
    pool.report("c:1935", load=5)  # neither: room unknown
    pool.report("p:1935", load=0, capacity=100, state=EdgeState.PAUSED)
    assert pool.core.headroom(pool.now) == {"clients": 70 + 30, "edges": 3,
                                            "unknown_edges": 1}
    pool.viewer()  # goes to c (least load), whose room is unknown
    pool.viewer("live/x")
    assert pool.core.headroom(pool.now)["clients"] <= 100


def test_the_balance_factor_and_floor_are_checked_and_switch_live():
    with pytest.raises(ValueError, match="balance_factor"):
        StreamAffinity(1.0)
    pool = Pool("concurrent-connects")
    assert not pool.core.wants_streams
    pool.core.set_affinity(True, 2.0)
    assert pool.core.wants_streams and pool.core.stream_affinity.balance_factor == 2.0
    with pytest.raises(ValueError):
        pool.core.set_affinity(True, 0.5)
    assert pool.core.stream_affinity.balance_factor == 2.0  # unchanged by the refusal
    pool.core.set_redirector("stream-affinity")
    pool.core.set_affinity(False)
    assert pool.core.wants_streams  # the redirector has it whatever the option says


def test_the_floor_keeps_a_small_streams_viewers_on_one_edge():
    """3 idle edges: without the floor the bound (1, then 2…) spreads the first viewers."""
    for floor, most_edges in ((8, 1), (0, 3)):
        pool = Pool(affinity_floor=floor)
        for name in "abc":
            pool.report(f"{name}:1935")
        edges = {pool.viewer("live/s") for _ in range(6)}
        assert len(edges) <= most_edges and (floor or len(edges) > 1)


def test_memory_is_bounded_whatever_stream_names_come():
    from lbmgmt.balancer import affinity
    pool = Pool()
    pool.report("a:1935")
    old, affinity.MAX_RECENT = affinity.MAX_RECENT, 50
    try:
        for n in range(500):
            pool.viewer(f"junk/{n}")
    finally:
        affinity.MAX_RECENT = old
    assert len(pool.core.stream_affinity.recent) <= 51


# -- the fronts name the stream -------------------------------------------------------

def carrier_pool() -> Pool:
    """a is emptier; b carries live/s (and hls/s): a named viewer goes to b, others to a."""
    pool = Pool()
    pool.report("a:1935", load=0)
    pool.report("b:1935", load=5, streams=("live/s", "hls/s", "live/cam/1"))
    return pool


def http(pool: Pool, target: bytes, method: str = "GET"):
    from lbmgmt.balancer.config import HttpConfig, WebRtcConfig
    from lbmgmt.balancer.front.answers import Answers
    from lbmgmt.balancer.front.http import Request
    path, _, query = target.partition(b"?")
    answers = Answers(pool.core, HttpConfig(), WebRtcConfig())
    return answers.answer(Request(method, target, path, query or None, [], "1.1", True,
                                  b"v=0\r\n" if method == "POST" else b""),
                          now=pool.now, local_port=1935)


@pytest.mark.parametrize("target,method", [
    (b"/loadbalancer?stream=live/s", "GET"),
    (b"/loadbalancer?x=1&stream=live%2Fs", "GET"),
    (b"/redirect/hls/s.m3u8", "GET"),
    (b"/redirect/hls/s/index.m3u8?token=1", "GET"),
    (b"/whep/live/s", "POST"),
    (b"/whip/live/cam/1", "POST"),
])
def test_http_clients_name_their_stream(target, method):
    pool = carrier_pool()
    answer = http(pool, target, method)
    text = answer.body.decode() + str(dict(answer.headers))  # type: ignore[union-attr]
    assert "b:1935" in text or "//b:" in text, text
    # the same request with no stream in it goes to the emptier edge
    plain = http(carrier_pool(), b"/loadbalancer")
    assert plain.body == b"redirect=a:1935"  # type: ignore[union-attr]


@pytest.mark.parametrize("method,url", [
    ("DESCRIBE", "rtsp://lb/live/s"), ("ANNOUNCE", "rtsp://lb/live/s?t=1"),
    ("SETUP", "rtsp://lb/live/s/trackID=0"),
])
def test_rtsp_clients_name_their_stream_by_the_path(method, url):
    from lbmgmt.balancer.front.rtsp import COUNTERS, RtspAnswers
    from lbmgmt.balancer.rtsp_config import RtspConfig
    from lbmgmt.rtsp.connection import RtspRequest
    pool = carrier_pool()
    answers = RtspAnswers(pool.core, RtspConfig(), Counter(dict.fromkeys(COUNTERS, 0)))
    request = RtspRequest(method=method, url=url.encode(), cseq=b"1", headers=[], body=b"")
    answer = answers.answer(request, now=pool.now, client_port=554)
    assert answer.status == 302 and dict(answer.headers)["Location"].startswith("rtsp://b:")


# -- what an outside-in attack found (each failed before its fix) ---------------------

def true_tally(pool: Pool) -> tuple[float, float]:
    willing = [e for e in pool.core.registry if e.willing]
    return (sum(e.report.load for e in willing), sum(e.pending_load for e in willing))


def test_the_mean_stays_the_true_mean_through_capacity_changes_and_pauses():
    pool = Pool()
    pool.report("a:1935", load=300, capacity=1000)
    pool.report("b:1935", load=300, capacity=1000)
    pool.report("b:1935", load=300, capacity=1000, state=EdgeState.PAUSED)
    pool.report("a:1935", load=300, capacity=1200)  # the only willing edge changes capacity
    pool.report("b:1935", load=300, capacity=1000)
    for n in range(8):
        pool.report(f"n{n}:1935", load=0, capacity=1000)
    pool.report("a:1935", load=0, capacity=1200)
    pool.report("b:1935", load=0, capacity=1000)
    tally = pool.core.stream_affinity.tallies[None]
    assert (tally.reported, tally.pending) == true_tally(pool)
    assert tally.capacity == 1200 + 9 * 1000


def test_the_ring_takes_edges_in_and_out_without_a_rebuild():
    from lbmgmt.balancer.affinity import ring_points
    pool = Pool()
    for n in range(40):
        pool.report(f"e{n}:1935")
    for n in range(0, 40, 3):
        pool.report(f"e{n}:1935", state=EdgeState.STOPPING)
    ring = pool.core.stream_affinity.rings[None]
    expected = sorted((p, e.address) for e in pool.core.registry for p in ring_points(e))
    assert list(zip(ring.points, (o.address for o in ring.owners), strict=True)) == expected


def test_a_choice_looks_at_a_bounded_number_of_carriers_and_sent_edges():
    from lbmgmt.balancer import affinity
    pool = Pool()
    for n in range(100):
        pool.report(f"e{n}:1935", load=n, streams=("live/hot",))
    carriers = pool.core.stream_affinity.carriers[stream_key("live/hot")]
    assert len(carriers.some(random.Random(1))) == affinity.CARRIERS_LOOKED_AT
    for n in range(100):
        pool.report(f"e{n}:1935", load=n)  # nobody lists it now: only what was sent counts
    for _ in range(300):
        pool.viewer("live/hot")
    assert len(pool.core.stream_affinity.recent[stream_key("live/hot")]) <= (
        affinity.MAX_SENT_EDGES)


@pytest.mark.parametrize("peers,holds", [(3, True), (0, False)])
def test_peers_keep_several_balancers_within_the_bound(peers, holds):
    """Four balancers, each counting only its own redirects, fill one carrier at once."""
    pools = [Pool(peers=peers) for _ in range(4)]
    for pool in pools:
        for n in range(10):
            pool.report(f"e{n}:1935", load=100, streams=("live/s",) if n == 0 else ())
    for _ in range(100):
        for pool in pools:
            pool.viewer("live/s")
    loads = Counter()
    for pool in pools:
        for e in pool.core.registry:
            loads[e.address] += e.report.load / 4 + e.redirects_since_report
    mean = sum(loads.values()) / len(loads)
    assert (max(loads.values()) <= math.ceil(1.25 * mean) + 4) is holds


def test_a_group_has_its_own_mean_and_ring():
    import ipaddress
    from lbmgmt.balancer.routing import Routing, RoutingConfig, Rule
    routing = Routing(RoutingConfig(rules=(Rule(
        groups=("eu",), networks=(ipaddress.ip_network("10.0.0.0/8"),)),)))
    pool = Pool(routing=routing)
    for n in range(8):
        pool.report(f"us{n}:1935", load=200, group="us")
    for n in range(4):
        pool.report(f"eu{n}:1935", load=0, group="eu")
    for _ in range(200):
        assert pool.viewer("live/s", client="10.1.2.3").startswith("eu")
    eu = [e.effective_load for e in pool.core.registry if e.report.group == "eu"]
    assert max(eu) <= math.ceil(1.25 * sum(eu) / len(eu))
    assert pool.core.stream_affinity.counters["fallback"] == 0


def test_draining_is_never_available_whatever_state_the_sender_put_beside_it():
    pool = Pool()
    pool.report("a:1935", load=50)
    pool.report("d:1935", load=0, draining=5000)  # RUNNING and draining: a foreign sender
    assert all(pool.viewer() == "a:1935" for _ in range(5))


def test_changing_the_balance_factor_keeps_the_counters_and_what_was_sent():
    pool = carrier_pool()
    pool.viewer("live/s")
    pool.viewer("live/new")
    before = dict(pool.core.stream_affinity.counters)
    pool.core.set_affinity(False, 1.5)
    assert pool.core.stream_affinity.counters == before
    assert stream_key("live/new") in pool.core.stream_affinity.recent


def test_a_stream_name_is_bounded_in_bytes_not_characters():
    from lbmgmt.streams import MAX_NAME_BYTES, named
    assert named("é" * (MAX_NAME_BYTES // 2)) is not None
    assert named("é" * (MAX_NAME_BYTES // 2 + 1)) is None


def test_list_servers_counts_each_edges_redirects_for_a_rate():
    from lbmgmt.balancer.mbeans import server_summary
    pool = carrier_pool()
    sent = Counter(pool.viewer() for _ in range(5))
    pool.report("a:1935", load=5)  # a report: "since report" starts again, the total not
    rows = {r.address: server_summary(r) for r in pool.core.status(pool.now).servers}
    assert {a: rows[a]["redirectsTotal"] for a in rows} == {a: sent[a] for a in rows}
    assert rows["a:1935"]["redirectsSinceReport"] == 0 and sum(sent.values()) == 5
