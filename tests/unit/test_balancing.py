"""Balancing quality, deterministic: seeded redirectors, the grace window, a flash crowd.

The flash crowd is simulated in-process with time passed in: 20 edges reporting
every 2.5 s (staggered), 5000 clients arriving within one second, each asking a
balancer and connecting to its edge 50-300 ms later and staying. An edge's
reported load is the clients actually connected when it measures.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections import Counter
from dataclasses import dataclass

import pytest

from lbmgmt.balancer.redirectors import (ConcurrentConnects, PowerOfTwoChoices, Redirector,
                                         RoundRobin, Weighted)
from lbmgmt.balancer.registry import ServerEntry, ServerRegistry
from lbmgmt.status import EdgeState, Report, ReportAccepted


def report(guid, load=0.0, *, now=0.0, sent=None, capacity=None, state=EdgeState.RUNNING,
           interval_ms=2500) -> ReportAccepted:
    sent = now if sent is None else sent
    return ReportAccepted(guid, b"b" * 8, 1, sent, Report(state, f"e{guid.int}", load,
                                                          interval_ms, capacity),
                          received_at=now)


def guids(n: int) -> list[uuid.UUID]:
    return [uuid.UUID(int=i + 1) for i in range(n)]


# -- the grace window ------------------------------------------------------------
def test_redirects_just_before_a_report_was_sent_keep_counting():
    reg = ServerRegistry(grace=0.5)
    [a] = guids(1)
    reg.apply(report(a, 10, now=0.0), now=0.0)
    entry = reg.get(a)
    reg.count_redirect(entry, 9.0)  # long before the next report: the report includes it
    reg.count_redirect(entry, 9.9)  # 0.3 s before it was sent: maybe not connected yet
    assert entry.effective_load == 12
    reg.apply(report(a, 11, now=10.2, sent=10.2), now=10.2)
    # 9.9 is 0.3 s before the send: a 1 - 0.3/0.5 = 0.4 chance it had not connected
    assert entry.effective_load == pytest.approx(11.4)
    reg.count_redirect(entry, 10.3)  # after the report: fully
    assert entry.effective_load == pytest.approx(12.4)
    reg.apply(report(a, 13, now=10.5, sent=10.5), now=10.5)
    assert entry.effective_load == pytest.approx(13 + 0.6)  # 9.9 out; 10.3 0.2 s before


def test_transit_time_moves_the_window_back_to_the_send_time():
    reg = ServerRegistry(grace=0.5)
    [a] = guids(1)
    reg.apply(report(a, 0, now=0.0), now=0.0)
    entry = reg.get(a)
    reg.count_redirect(entry, 9.6)
    # sent at wall 100.0, received at wall 100.3: 0.3 s in transit; monotonic now 10.3
    reg.apply(ReportAccepted(a, b"b" * 8, 2, 100.0, Report(EdgeState.RUNNING, "e", 0, 2500),
                             received_at=100.3), now=10.3)
    # sent at monotonic 10.0: 9.6 is 0.4 s before, weight 1 - 0.4/0.5
    assert entry.effective_load == pytest.approx(0.2)


# -- each redirector, seeded ------------------------------------------------------
def pool(loads, *, now=0.0, capacities=None, ages=None) -> ServerRegistry:
    reg = ServerRegistry(timeout=30)
    for i, (g, load) in enumerate(zip(guids(len(loads)), loads, strict=True)):
        at = now - (ages[i] if ages else 0)
        reg.apply(report(g, load, now=at, capacity=capacities[i] if capacities else None),
                  now=at)
    return reg


def picks(redirector: Redirector, reg: ServerRegistry, n: int, now=0.0) -> Counter:
    return Counter(redirector.redirect(reg, now).guid.int for _ in range(n))


def test_concurrent_connects_water_fills():
    reg = pool([6, 0, 3])
    assert picks(ConcurrentConnects(rng=random.Random(1)), reg, 9) == {2: 6, 3: 3}


def test_concurrent_connects_prefers_fresh_edges_to_stale_ones():
    # edge 2 last reported 8 s ago (over 3 intervals of 2.5 s), inside the 30 s timeout
    reg = pool([10, 0], now=20.0, ages=[0, 8])
    rd = ConcurrentConnects(rng=random.Random(2))
    assert picks(rd, reg, 5, now=20.0) == {1: 5}
    reg.set_drained(guids(2)[0], True)
    assert picks(rd, reg, 2, now=20.0) == {2: 2}  # nothing fresher: the stale one


def test_weighted_uses_capacity_and_skips_full_edges():
    reg = pool([50, 4, 9], capacities=[100, 10, 10])
    rd = Weighted(rng=random.Random(3))
    chosen = []
    while (entry := rd.redirect(reg, 0)) is not None:
        chosen.append(entry.guid.int)
    assert chosen[0] == 2  # 4/10 < 50/100 < 9/10
    assert Counter(chosen) == {1: 50, 2: 6, 3: 1}  # each filled to its capacity, no more
    assert [e.effective_load for e in reg] == [100, 10, 10]
    assert chosen.index(3) > 40  # 9/10 waits until the others are as full
    # an edge without capacity only once every edge with one is full
    uncapped = pool([1, 1], capacities=[None, 100])
    rd = Weighted(rng=random.Random(4))
    assert picks(rd, uncapped, 99) == {2: 99}
    assert picks(rd, uncapped, 3) == {1: 3}  # edge 2 is full now


def test_p2c_picks_the_less_loaded_of_two_random_edges():
    reg = pool([5, 0])
    assert picks(PowerOfTwoChoices(rng=random.Random(5)), reg, 5) == {2: 5}
    reg = pool([0] * 10)
    counts = picks(PowerOfTwoChoices(rng=random.Random(6)), reg, 1000)
    assert max(counts.values()) - min(counts.values()) <= 5  # two choices keep it tight
    reg = pool([0, 0, 0])
    for g in guids(3)[:2]:
        reg.set_drained(g, True)
    assert picks(PowerOfTwoChoices(rng=random.Random(7)), reg, 4) == {3: 4}


def test_round_robin_fresh_first():
    reg = pool([0, 0, 0], now=20.0, ages=[0, 0, 9])
    assert picks(RoundRobin(), reg, 6, now=20.0) == {1: 3, 2: 3}


def test_switching_redirector_builds_its_index_from_the_registry():
    reg = pool([3, 1, 2])
    rd = ConcurrentConnects(rng=random.Random(8))
    assert rd.redirect(reg, 0).guid.int == 2
    again = ConcurrentConnects(rng=random.Random(8))
    again.attach(reg)
    rd.detach()
    assert reg.observers == [again]
    assert again.redirect(reg, 0).guid.int in (2, 3)  # 2 now has 1+1, tied with 3


def test_index_follows_leaves_drains_and_state_changes():
    reg = pool([0, 5])
    rd = ConcurrentConnects(rng=random.Random(9))
    a, b = guids(2)
    assert rd.redirect(reg, 0).guid == a
    reg.apply(report(a, 0, now=0.1, state=EdgeState.PAUSED), now=0.1)
    assert rd.redirect(reg, 0.1).guid == b
    reg.apply(report(a, 0, now=0.2), now=0.2)
    assert rd.redirect(reg, 0.2).guid == a
    reg.remove(a)
    assert {rd.redirect(reg, 0.3).guid for _ in range(3)} == {b}
    assert len(rd.index) <= len(reg) and len(rd.index.group_heap) <= 4  # few groups in use


# -- the flash crowd ----------------------------------------------------------------
class StaleLeastLoaded(Redirector):
    """What not to do: least *reported* load, ignoring the clients sent since."""

    name = "stale-least-loaded"

    def choose(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        live = [e for e in servers.available(now)]
        return min(live, key=lambda e: e.load) if live else None


@dataclass
class Crowd:
    edges: int = 20
    clients: int = 5000
    arrival_window: float = 1.0
    interval: float = 2.5
    balancers: int = 1
    seed: int = 42

    def run(self, make: type[Redirector], *, grace: float = 0.5) -> float:
        """max/mean connections per edge once every client has connected."""
        rng = random.Random(self.seed)
        edge_ids = guids(self.edges)
        regs = [ServerRegistry(timeout=10, grace=grace) for _ in range(self.balancers)]
        redirectors = [make(rng=random.Random(self.seed + i)) for i in range(self.balancers)]
        connected = Counter()
        events: list[tuple[float, int, str, int]] = []  # (time, order, kind, edge index)
        order = 0

        def at(t: float, kind: str, edge: int) -> None:
            nonlocal order
            order += 1
            heapq.heappush(events, (t, order, kind, edge))

        for i in range(self.edges):  # staggered report schedules, first report at start
            t = -self.interval + i * self.interval / self.edges
            while t < self.arrival_window + 1.0:
                at(t, "report", i)
                t += self.interval
        for c in range(self.clients):
            at(c * self.arrival_window / self.clients, "arrive", c % self.balancers)
        while events:
            t, _, kind, n = heapq.heappop(events)
            if kind == "report":
                for reg in regs:  # every balancer gets every report (1 ms transit)
                    reg.apply(ReportAccepted(edge_ids[n], b"b" * 8, 1, t, Report(
                        EdgeState.RUNNING, f"e{n}", float(connected[n]),
                        int(self.interval * 1000)), received_at=t + 0.001), now=t + 0.001)
            elif kind == "arrive":
                chosen = redirectors[n].redirect(regs[n], t)
                assert chosen is not None
                at(t + rng.uniform(0.05, 0.3), "connect", edge_ids.index(chosen.guid))
            else:
                connected[n] += 1
        loads = [connected[i] for i in range(self.edges)]
        return max(loads) / (sum(loads) / len(loads))


def test_plain_stale_least_loaded_herds_and_ours_does_not():
    crowd = Crowd()
    herd = crowd.run(StaleLeastLoaded)
    ours = crowd.run(ConcurrentConnects)
    assert herd > 5.0, herd  # the flash crowd lands on a few edges
    assert ours <= 1.05, ours


def test_the_grace_window_helps():
    crowd = Crowd()
    assert crowd.run(ConcurrentConnects, grace=0.5) <= crowd.run(ConcurrentConnects, grace=0.0)


@pytest.mark.parametrize("balancers, bound", [(1, 1.05), (4, 1.15)])
def test_p2c_with_several_balancers(balancers, bound):
    assert Crowd(balancers=balancers).run(PowerOfTwoChoices) <= bound
