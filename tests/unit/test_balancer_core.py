"""Registry and redirectors, sans-IO: reports and time passed in, no sockets, no sleeps."""

from __future__ import annotations

import logging
import random
import uuid
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbmgmt.balancer.redirectors import ConcurrentConnects, RoundRobin, redirector_class
from lbmgmt.balancer.registry import (REJOIN_WINDOW, LeaveReason, ServerJoined, ServerLeft,
                                      ServerCannotStay, ServerRegistry, ServerStateChanged)
from lbmgmt.plugins import PluginError
from lbmgmt.balancer.core import BalancerCore
from lbmgmt.status import (DropReason, EdgeState, Report, ReportAccepted, ReportSealer,
                           SharedKey)
from lbmgmt.throttle import Throttle


def report(guid: uuid.UUID, load: float = 0, state=EdgeState.RUNNING, *, boot=b"b" * 8,
           seq=1, address=None, interval_ms=2500) -> ReportAccepted:
    return ReportAccepted(guid, boot, seq, 0.0,
                          Report(state, address or f"edge-{guid.int}", load, interval_ms))


def guids(n):
    return [uuid.UUID(int=i + 1) for i in range(n)]


def test_join_update_state_change_and_stop():
    reg = ServerRegistry(timeout=5)
    a = guids(1)[0]
    [joined] = reg.apply(report(a, 3), now=0)
    assert isinstance(joined, ServerJoined) and len(reg) == 1
    assert reg.apply(report(a, 4, seq=2), now=1) == []
    assert reg.get(a).load == 4 and reg.get(a).reports_received == 2
    [changed] = reg.apply(report(a, 4, EdgeState.PAUSED, seq=3), now=2)
    assert isinstance(changed, ServerStateChanged) and changed.new is EdgeState.PAUSED
    assert list(reg.available(2)) == [] and len(reg) == 1  # paused: listed, not available
    [left] = reg.apply(report(a, 4, EdgeState.STOPPING, seq=4), now=3)
    assert isinstance(left, ServerLeft) and left.reason is LeaveReason.STOPPED
    assert len(reg) == 0


def test_an_edge_leaves_after_missing_four_of_its_own_reports():
    reg = ServerRegistry(timeout=5)  # the floor, under 4.5 intervals of 2.5 s
    a, b = guids(2)
    reg.apply(report(a), now=0)
    reg.apply(report(b), now=3)
    assert reg.get(a).leave_after == 11.25
    assert {e.guid for e in reg.available(11.25)} == {a, b}
    assert {e.guid for e in reg.available(11.3)} == {b}  # a is out of choice at once
    assert reg.available_count(11.3) == 1
    [left] = reg.expire(11.3)
    assert left.server.guid == a and left.reason is LeaveReason.TIMED_OUT
    assert reg.expire(14.25) == [] and len(reg) == 1
    assert len(reg.expire(14.3)) == 1 and len(reg) == 0


def test_message_timeout_is_the_floor_and_max_silence_the_ceiling():
    reg = ServerRegistry(timeout=5, max_silence=60)
    fast, slow, slower = guids(3)
    reg.apply(report(fast, interval_ms=200), now=0)  # 4.5 intervals: 0.9 s, under the floor
    reg.apply(report(slow, interval_ms=10_000), now=0)  # 45 s
    reg.apply(report(slower, interval_ms=20_000), now=0)  # 90 s: past the ceiling
    assert [reg.get(g).leave_after for g in (fast, slow, slower)] == [5, 45, 60]
    assert [e.server.guid for e in reg.expire(5.1)] == [fast]
    assert [e.server.guid for e in reg.expire(45.1)] == [slow]
    assert [e.server.guid for e in reg.expire(60.1)] == [slower]


def test_changing_a_liveness_setting_refiles_every_edge():
    reg = ServerRegistry(timeout=5)
    a, b = guids(2)
    reg.apply(report(a), now=0)
    reg.apply(report(b, interval_ms=1000), now=1)
    reg.missed_reports = 2  # a: 2.5 intervals of 2.5 s; b: under the 5 s floor
    assert (reg.get(a).leave_after, reg.get(b).leave_after) == (6.25, 5)
    assert [e.server.guid for e in reg.expire(6.1)] == [b]
    reg.timeout = 20
    assert reg.get(a).leave_after == 20 and reg.expire(19) == []


def test_a_timed_out_edge_that_comes_back_gets_its_old_entry():
    reg = ServerRegistry(timeout=5)
    a = guids(1)[0]
    reg.apply(report(a, 3), now=0)
    entry = reg.get(a)
    reg.count_redirect(entry, now=1)
    reg.expire(12)
    assert reg.get(a) is None and reg.departed_count == 1
    [joined] = reg.apply(report(a, 4, seq=2), now=20)
    assert isinstance(joined, ServerJoined) and joined.absent_for == 8
    assert reg.get(a) is entry  # the same entry: its counts and first sight kept
    assert entry.reports_received == 2 and entry.redirects_total == 1
    assert entry.first_seen == 0 and entry.pending_load == 0 and entry.load == 4
    assert {e.guid for e in reg.available(20)} == {a} and reg.departed_count == 0


def test_a_departed_entry_is_forgotten_after_the_rejoin_window():
    reg = ServerRegistry(timeout=5)
    a = guids(1)[0]
    reg.apply(report(a), now=0)
    reg.expire(12)
    reg.expire(12 + REJOIN_WINDOW + 1)
    assert reg.departed_count == 0
    [joined] = reg.apply(report(a, seq=2), now=400)
    assert joined.absent_for is None and reg.get(a).reports_received == 1


def test_a_stopped_edge_is_not_kept_for_its_return():
    reg = ServerRegistry(timeout=5)
    a = guids(1)[0]
    reg.apply(report(a), now=0)
    reg.expire(12)
    reg.apply(report(a, state=EdgeState.STOPPING, seq=2), now=13)
    assert reg.departed_count == 0


def test_restarted_edge_replaces_its_entry():
    reg = ServerRegistry()
    a = guids(1)[0]
    reg.apply(report(a, 9, boot=b"1" * 8), now=0)
    assert reg.apply(report(a, 1, boot=b"2" * 8, address="new:1935"), now=1) == []
    [entry] = list(reg)
    assert entry.boot_id == b"2" * 8 and entry.address == "new:1935" and entry.load == 1


def test_stop_report_from_unknown_edge_is_ignored():
    assert ServerRegistry().apply(report(guids(1)[0], state=EdgeState.STOPPING), now=0) == []


def test_remove():
    reg = ServerRegistry()
    a = guids(1)[0]
    reg.apply(report(a), now=0)
    [left] = reg.remove(a)
    assert left.reason is LeaveReason.REMOVED and reg.remove(a) == []


def test_concurrent_connects_fills_the_least_loaded_and_counts_since_report():
    reg = ServerRegistry()
    a, b, c = guids(3)
    for g, load in ((a, 6), (b, 0), (c, 3)):
        reg.apply(report(g, load), now=0)
    rd = ConcurrentConnects(rng=random.Random(1))
    picks = [rd.redirect(reg, 0).guid for _ in range(9)]
    assert picks[:3] == [b, b, b]  # b climbs to c's load first
    assert Counter(picks) == {b: 6, c: 3}  # then b and c share until all are at 6
    assert reg.get(b).redirects_since_report == 6
    reg.apply(report(b, 1, seq=2), now=1)  # a report resets the count to the fresh load
    assert reg.get(b).redirects_since_report == 0 and reg.get(b).redirects_total == 6
    assert rd.redirect(reg, 1).guid == b


def test_concurrent_connects_breaks_ties_evenly():
    reg = ServerRegistry()
    gs = guids(4)
    rd = ConcurrentConnects(rng=random.Random(7))
    first = Counter()
    for round_ in range(400):
        for g in gs:
            reg.apply(report(g, 5, seq=round_ + 1), now=round_)
        first[rd.redirect(reg, round_).guid] += 1
    assert set(first) == set(gs) and min(first.values()) > 60  # ~100 each


def test_concurrent_connects_skips_paused_drained_and_silent():
    reg = ServerRegistry(timeout=5)
    a, b, c, d = guids(4)
    reg.apply(report(c, 0), now=-2)  # silent for 12 s: 4 reports missed, and more
    reg.apply(report(a, 0, EdgeState.PAUSED), now=10)
    reg.apply(report(b, 0), now=10)
    reg.apply(report(d, 50), now=10)
    reg.get(b).drained = True
    rd = ConcurrentConnects()
    assert {rd.redirect(reg, 10).guid for _ in range(5)} == {d}
    reg.get(d).drained = True
    assert rd.redirect(reg, 10) is None


def test_round_robin_cycles_over_available_edges():
    reg = ServerRegistry()
    gs = guids(3)
    for i, g in enumerate(gs):
        reg.apply(report(g, load=i * 100), now=0)
    rd = RoundRobin()
    assert [rd.redirect(reg, 0).guid for _ in range(6)] == gs + gs
    assert RoundRobin().redirect(ServerRegistry(), 0) is None


def test_redirectors_by_name_or_path():
    assert redirector_class("round-robin") is RoundRobin
    assert redirector_class("lbmgmt.balancer.redirectors:ConcurrentConnects") is ConcurrentConnects
    with pytest.raises(PluginError, match="unknown redirector"):
        redirector_class("fastest")
    with pytest.raises(PluginError, match="not a subclass"):
        redirector_class("lbmgmt.balancer.registry:ServerRegistry")


def test_expiry_finds_every_silent_edge_whatever_order_reports_came_in():
    reg = ServerRegistry(timeout=5)  # (1 s intervals: the 5 s floor applies)
    a, b, c = guids(3)
    reg.apply(report(a, 0, interval_ms=1000), now=10)
    reg.apply(report(b, 0, interval_ms=1000), now=0)  # an earlier time after a later one
    reg.apply(report(c, 0, interval_ms=1000), now=12)
    assert [e.server.guid for e in reg.expire(now=14)] == [b]
    reg.apply(report(c, 0, interval_ms=1000), now=20)  # c heard again: a is now the longest silent
    assert [e.server.guid for e in reg.expire(now=16)] == [a]
    assert [e.guid for e in reg] == [c] and reg.expire(now=25) == []
    assert [e.server.guid for e in reg.expire(now=25.5)] == [c]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["report", "pause", "stop", "drain", "undrain", "remove", "sweep"]),
    st.integers(0, 4),  # which edge
    st.floats(0, 3)),  # seconds since the step before
    max_size=40))
def test_available_count_is_kept_without_a_scan_and_equals_one(steps):
    reg = ServerRegistry(timeout=5)
    edges = guids(5)
    now = 0.0
    for action, which, dt in steps:
        now += dt
        guid = edges[which]
        if action in ("report", "pause", "stop"):
            state = {"report": EdgeState.RUNNING, "pause": EdgeState.PAUSED,
                     "stop": EdgeState.STOPPING}[action]
            reg.apply(report(guid, 0, state), now=now)
        elif action in ("drain", "undrain") and reg.get(guid) is not None:
            reg.set_drained(guid, action == "drain")
        elif action == "remove":
            reg.remove(guid)
        elif action == "sweep":
            reg.expire(now)
        later = now + dt  # (and a moment after, before any sweep)
        for at in (now, later):
            assert reg.available_count(at) == sum(reg.is_available(e, at) for e in reg)


# -- what goes wrong is said --------------------------------------------------------------
KEY = SharedKey("core-warnings-key")
WALL = 1_800_000_000.0


def sealed(guid: uuid.UUID, key: SharedKey = KEY, *, sent: float = WALL) -> bytes:
    return ReportSealer(guid).seal(Report(EdgeState.RUNNING, "10.0.0.7:1935", 0, 2500), key,
                                   now=sent)


def warnings_of(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_wrong_key_is_said_once_a_minute_per_sender_with_its_address(caplog):
    core = BalancerCore(KEY, timeout=5.0, grace=0.5, max_clock_skew=30.0)
    wrong = SharedKey("not-the-key-the-balancer-has")
    guid = uuid.UUID(int=9)
    for t in range(5):  # an edge that reports every second with the wrong key
        core.receive_datagram(sealed(guid, wrong, sent=WALL + t), now=t, wall=WALL + t,
                              source=("10.0.0.9", 40000))
    [first] = warnings_of(caplog)
    assert "key" in first.getMessage()
    assert first.fields == {"source": "10.0.0.9:40000", "claimed_guid": str(guid),  # type: ignore[attr-defined]
                            "held_back": 0, "other_hosts_unsaid": 0}
    core.receive_datagram(sealed(guid, wrong, sent=WALL + 61), now=61, wall=WALL + 61,
                          source=("10.0.0.9", 40001))  # same host, another port: same cause
    assert [r.fields["held_back"] for r in warnings_of(caplog)] == [0, 4]  # type: ignore[attr-defined]
    assert core.receiver.drops[DropReason.BAD_AUTH] == 6
    assert not any("not-the-key" in r.getMessage() + str(getattr(r, "fields", ""))
                   for r in caplog.records)  # a key is never logged, not even the wrong one


def test_a_skewed_clock_is_said_with_the_guid_and_the_offset_and_shows_before_it_drops(
        caplog):
    core = BalancerCore(KEY, timeout=5.0, grace=0.5, max_clock_skew=30.0)
    near, far = uuid.UUID(int=1), uuid.UUID(int=2)
    core.receive_datagram(sealed(near, sent=WALL + 12.5), now=0, wall=WALL, source=("a", 1))
    assert core.registry.get(near).clock_offset == pytest.approx(12.5)  # type: ignore[union-attr]
    assert warnings_of(caplog) == []
    core.receive_datagram(sealed(far, sent=WALL - 40), now=0, wall=WALL, source=("10.0.0.8", 9))
    [said] = warnings_of(caplog)
    assert "clock" in said.getMessage()
    assert said.fields == {"guid": str(far), "source": "10.0.0.8:9",  # type: ignore[attr-defined]
                           "offset_ms": -40000, "max_ms": 30000, "held_back": 0}
    assert core.registry.get(far) is None and core.receiver.drops[DropReason.STALE] == 1


def test_throttle_lets_one_through_per_interval_and_forgets_the_oldest_causes():
    throttle = Throttle(60.0, max_keys=2)
    assert throttle.allow("a", 0) == 0
    assert throttle.allow("a", 59) is None and throttle.allow("a", 59.5) is None
    assert throttle.allow("a", 60) == 2
    assert throttle.allow("b", 61) == 0 and throttle.allow("c", 62) == 0  # "a" forgotten
    assert throttle.allow("a", 63) == 0  # said again at once: bounded memory, not silence


def own_clock_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in warnings_of(caplog) if "this balancer's clock" in r.getMessage()]


def test_a_balancer_whose_clock_is_off_says_so_and_one_skewed_edge_does_not_make_it(caplog):
    core = BalancerCore(KEY, timeout=5.0, grace=0.5, max_clock_skew=30.0)
    # one edge 40 s ahead, three on time: that edge's clock, not ours
    core.receive_datagram(sealed(uuid.UUID(int=1), sent=WALL + 40), now=0, wall=WALL)
    for i in (2, 3, 4):
        core.receive_datagram(sealed(uuid.UUID(int=i), sent=WALL + 0.01), now=0, wall=WALL)
    core.handle_timer(now=1, wall=WALL + 1)
    assert own_clock_warnings(caplog) == [] and len(core.registry) == 3

    core = BalancerCore(KEY, timeout=5.0, grace=0.5, max_clock_skew=30.0)
    # our clock 40 s behind every edge's: all their reports are dropped as stale
    for i in (1, 2, 3, 4):
        core.receive_datagram(sealed(uuid.UUID(int=i), sent=WALL + 40), now=0, wall=WALL)
    assert len(core.registry) == 0
    core.handle_timer(now=1, wall=WALL + 1)
    [said] = own_clock_warnings(caplog)
    assert said.fields["edges_ahead_by_ms"] == 40000 and said.fields["edges"] == 4  # type: ignore[attr-defined]
    core.handle_timer(now=12, wall=WALL + 12)  # checked again, said again only a minute on
    assert len(own_clock_warnings(caplog)) == 1


def test_an_edge_that_reports_less_often_than_it_may_be_silent_is_said_to_flap(caplog):
    core = BalancerCore(KEY, timeout=5.0, grace=0.5, max_clock_skew=30.0, max_silence=8.0)
    slow, fine = uuid.UUID(int=1), uuid.UUID(int=2)
    events = []
    core.listeners.append(events.append)

    def report_of(guid: uuid.UUID, interval_ms: int, t: float) -> bytes:
        return ReportSealer(guid).seal(Report(EdgeState.RUNNING, "e:1", 0, interval_ms), KEY,
                                       now=WALL + t)
    core.receive_datagram(report_of(fine, 2500, 0), now=0, wall=WALL, source=("f", 1))
    assert warnings_of(caplog) == []
    for t in (0, 9, 18):  # every 9 s, and 8 s of silence at most: gone before each next one
        core.receive_datagram(report_of(slow, 9000, t), now=t, wall=WALL + t, source=("s", 1))
    [said] = warnings_of(caplog)
    assert "max_silence_ms" in said.getMessage()
    assert said.fields == {"guid": str(slow), "source": "s:1", "interval_ms": 9000,  # type: ignore[attr-defined]
                           "leave_after_ms": 8000, "held_back": 0}
    [event] = [e for e in events if isinstance(e, ServerCannotStay)]
    assert event.server.guid == slow and (event.interval, event.leave_after) == (9, 8)


def test_dropped_senders_say_who_and_why_and_an_edge_in_the_pool_its_last_drop():
    from lbmgmt.balancer.mbeans import BALANCER_NAME, BalancerBeans, server_name
    from lbmgmt.clocks import Clocks
    from lbmgmt.management.notifications import NotificationBuffer
    from lbmgmt.management.server import MBeanServer
    core = BalancerCore(KEY, timeout=5.0, grace=0.5, max_clock_skew=30.0)
    mbeans = MBeanServer(NotificationBuffer(100), clock=lambda: WALL)
    BalancerBeans(core, Clocks(wall=lambda: WALL, monotonic=lambda: 0.0), mbeans)
    skewed, member = uuid.UUID(int=1), uuid.UUID(int=2)
    core.receive_datagram(sealed(skewed, sent=WALL + 40), now=0, wall=WALL, source=("a", 1))
    for claimed in (uuid.UUID(int=7), uuid.UUID(int=8)):  # one host, two claims: one row
        core.receive_datagram(sealed(claimed, SharedKey("wrong")), now=0, wall=WALL,
                              source=("b", 2))
    first = sealed(member)
    core.receive_datagram(first, now=0, wall=WALL, source=("c", 3))
    core.receive_datagram(first, now=0, wall=WALL, source=("c", 3))  # a replay
    rows = mbeans.lookup(BALANCER_NAME).listDroppedSenders()  # type: ignore[attr-defined]
    by_reason = {r["reason"]: r for r in rows}
    assert set(by_reason) == {"stale", "bad-auth", "replay"}
    assert by_reason["stale"]["guid"] == str(skewed)
    assert by_reason["stale"]["clockOffsetMs"] == 40000
    assert by_reason["bad-auth"]["guid"] is None and by_reason["bad-auth"]["count"] == 2
    assert by_reason["bad-auth"]["source"] == "b:2"
    last = mbeans.get_attribute(server_name(member), "LastDrop")
    assert last["reason"] == "replay" and last["count"] == 1
