"""Floods on the report port, sans-IO: cheap rejection before crypto, edges served first,
and no edge leaving while the balancer cannot hear (fail static). Time driven by hand."""

from __future__ import annotations

import logging
import os
import uuid

from lbmgmt.balancer.core import MAX_FREEZE, BalancerCore
from lbmgmt.balancer.report_gate import BURST, RATE
from lbmgmt.status import DropReason, EdgeState, Report, ReportSealer, SharedKey

KEY = SharedKey("flood-key")
WALL = 1_800_000_000.0
EDGE = ("10.0.0.1", 40001)
FLOODER = ("10.0.0.66", 5555)


def new_core() -> BalancerCore:
    return BalancerCore(KEY, timeout=1.0, grace=0.5, max_clock_skew=30.0)


def good(sealer: ReportSealer, t: float) -> bytes:
    return sealer.seal(Report(EdgeState.RUNNING, "edge:1935", 0, 200), KEY, now=WALL + t)


def keyless(n: int) -> list[bytes]:
    """What a flooder without the key sends: the right header, random everything else."""
    wrong = SharedKey("a guess")
    return [ReportSealer(uuid.UUID(bytes=os.urandom(16))).seal(
        Report(EdgeState.RUNNING, "x:1", 0, 200), wrong, now=WALL) for _ in range(n)]


def test_a_flooding_host_runs_dry_and_costs_no_crypto_after_its_burst():
    core = new_core()
    for datagram in keyless(200):
        core.receive_datagram(datagram, now=0, wall=WALL, source=FLOODER)
    drops = core.receiver.drops
    assert drops[DropReason.BAD_AUTH] == BURST  # opened (and failed), then no more
    assert drops[DropReason.THROTTLED] == 200 - BURST
    # a second later it may cost RATE more
    for datagram in keyless(50):
        core.receive_datagram(datagram, now=1, wall=WALL + 1, source=FLOODER)
    assert drops[DropReason.BAD_AUTH] == BURST + RATE


def test_an_edge_is_served_whatever_floods_from_its_own_host():
    core = new_core()
    edge = ReportSealer(uuid.UUID(int=1))
    core.receive_datagram(good(edge, 0), now=0, wall=WALL, source=EDGE)
    same_host = (EDGE[0], 6666)
    for datagram in keyless(500):
        core.receive_datagram(datagram, now=0.1, wall=WALL, source=same_host)
    assert core.receiver.drops[DropReason.THROTTLED] > 0
    for i in range(1, 6):  # the edge's own socket: trusted, never throttled
        core.receive_datagram(good(edge, 0.1 * i), now=0.1 * i, wall=WALL, source=EDGE)
    assert core.receiver.accepted == 6


def test_an_edge_with_the_wrong_key_is_never_throttled_and_keeps_being_said(caplog):
    core = new_core()
    wrong = ReportSealer(uuid.UUID(int=2))
    for i in range(100):  # one bad report per 2.5 s interval, for 250 s
        core.receive_datagram(wrong.seal(Report(EdgeState.RUNNING, "e:1", 0, 2500),
                                         SharedKey("old key"), now=WALL + 2.5 * i),
                              now=2.5 * i, wall=WALL + 2.5 * i, source=EDGE)
    assert core.receiver.drops[DropReason.BAD_AUTH] == 100
    assert core.receiver.drops[DropReason.THROTTLED] == 0
    said = [r for r in caplog.records if "key" in r.getMessage()]
    assert len(said) == 5  # once a minute


def sweep(core: BalancerCore, t: float, **kw) -> None:
    core.handle_timer(now=t, wall=WALL + t, **kw)


def test_no_edge_leaves_while_the_kernel_drops_reports_and_silence_counts_after(caplog):
    core = new_core()
    edge = ReportSealer(uuid.UUID(int=1))
    core.receive_datagram(good(edge, 0), now=0, wall=WALL, source=EDGE)
    sweep(core, 0, kernel_drops=0)
    flood = keyless(20)
    t, dropped = 0.0, 0
    while t < 30:  # 30 s of flood, the kernel dropping; every one of the edge's reports lost
        t = round(t + 0.25, 2)
        for i in range(1000):
            core.receive_datagram(flood[i % 20], now=t, wall=WALL + t,
                                  source=(f"10.1.{i % 250}.{i // 250}", 1))
        dropped += 500
        sweep(core, t, kernel_drops=dropped)
        assert core.redirect("http", t) is not None, f"pool empty at {t} s"
    assert len(core.registry) == 1 and core.registry.frozen
    assert core.overload.episodes == 1 and core.overload.seconds >= 29
    [said] = [r for r in caplog.records if r.getMessage().startswith("report port overloaded")]
    assert said.levelname == "WARNING"
    # the flood ends: after OVERLOAD_HOLD silence counts again, from where it stood
    sweep(core, 30.25, kernel_drops=dropped)
    sweep(core, 32.5, kernel_drops=dropped)
    assert not core.registry.frozen and len(core.registry) == 1
    entry = core.registry.get(edge.guid)
    assert entry is not None and core.registry.is_available(entry, 32.5)
    sweep(core, 32.5 + 1.05, kernel_drops=dropped)  # counted silence past the 1 s floor
    assert len(core.registry) == 0


def test_a_flood_the_gate_turns_away_costs_no_report_and_freezes_nothing():
    core = new_core()
    edge = ReportSealer(uuid.UUID(int=1))
    core.receive_datagram(good(edge, 0), now=0, wall=WALL, source=EDGE)
    flood = keyless(20)
    for step in range(1, 9):  # 4000 a second, turned away before any crypto
        t = step * 0.25
        for i in range(1000):
            core.receive_datagram(flood[i % 20], now=t, wall=WALL + t, source=FLOODER)
        sweep(core, t, kernel_drops=0)
    assert core.receiver.drops[DropReason.THROTTLED] > 7000
    assert not core.registry.frozen and len(core.registry) == 0  # the dead edge went


def test_no_overload_keeps_a_dead_edge_for_more_than_max_freeze(caplog):
    core = new_core()
    edge = ReportSealer(uuid.UUID(int=1))
    core.receive_datagram(good(edge, 0), now=0, wall=WALL, source=EDGE)
    t, dropped = 0.0, 0
    while t < MAX_FREEZE + 5:  # the kernel drops for ever; the edge is dead
        t = round(t + 0.25, 2)
        dropped += 100
        sweep(core, t, kernel_drops=dropped)
    assert len(core.registry) == 0
    assert any(r.getMessage().startswith("report port overloaded for longer")
               for r in caplog.records)


def test_replays_cost_no_crypto_at_all():
    core = new_core()
    edge = ReportSealer(uuid.UUID(int=1))
    captured = good(edge, 0)
    core.receive_datagram(captured, now=0, wall=WALL, source=EDGE)
    opened = []

    class Counting:  # the edge's cached cipher, counting what it is asked to open
        def __init__(self, cipher) -> None:
            self.cipher = cipher

        def decrypt(self, *args):
            opened.append(1)
            return self.cipher.decrypt(*args)
    ciphers = core.receiver._ciphers
    [key] = list(ciphers)
    ciphers[key] = Counting(ciphers[key])  # type: ignore[assignment]
    for _ in range(200):  # one captured report, replayed from elsewhere at line rate
        core.receive_datagram(captured, now=0.1, wall=WALL, source=FLOODER)
    assert core.receiver.drops[DropReason.REPLAY] == 200 and opened == []


def test_an_edge_whose_source_changed_is_let_through_by_its_known_header():
    core = new_core()
    edge = ReportSealer(uuid.UUID(int=1))
    core.receive_datagram(good(edge, 0), now=0, wall=WALL, source=EDGE)
    moved = (EDGE[0], 50000)  # its socket was made anew; its host floods meanwhile
    for datagram in keyless(100):
        core.receive_datagram(datagram, now=0.1, wall=WALL, source=(EDGE[0], 6666))
    core.receive_datagram(good(edge, 0.2), now=0.2, wall=WALL, source=moved)
    assert core.receiver.accepted == 2


def test_kernel_drops_on_the_report_socket_also_hold_the_pool():
    core = new_core()
    edge = ReportSealer(uuid.UUID(int=1))
    core.receive_datagram(good(edge, 0), now=0, wall=WALL, source=EDGE)
    sweep(core, 0, kernel_drops=10)
    for i in range(1, 21):  # 5 s with the kernel dropping datagrams, nothing bad seen
        sweep(core, i * 0.25, kernel_drops=10 + 100 * i)
    assert len(core.registry) == 1 and core.overload.kernel_drops == 2000
    assert core.overload.episodes == 1


def test_a_quiet_report_port_lets_silent_edges_leave_as_ever():
    core = new_core()
    edge = ReportSealer(uuid.UUID(int=1))
    core.receive_datagram(good(edge, 0), now=0, wall=WALL, source=EDGE)
    for i in range(9):  # a few bad datagrams a second: no overload
        core.receive_datagram(keyless(1)[0], now=i * 0.125, wall=WALL, source=FLOODER)
        sweep(core, i * 0.125, kernel_drops=0)
    sweep(core, 1.05, kernel_drops=0)
    assert len(core.registry) == 0 and core.overload.episodes == 0


def test_logs_name_the_flood_once(caplog):
    caplog.set_level(logging.INFO)
    test_no_edge_leaves_while_the_kernel_drops_reports_and_silence_counts_after(caplog)
    assert any(r.getMessage().startswith("report port no longer overloaded")
               for r in caplog.records)
