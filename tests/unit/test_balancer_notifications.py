"""The balancer's notifications, with a hand-driven clock: no sockets, no sleeping."""

from __future__ import annotations

from lbmgmt.balancer.config import BalancerConfig
from lbmgmt.balancer.daemon import BalancerDaemon
from lbmgmt.balancer.mbeans import DROP_NOTIFY_INTERVAL
from lbmgmt.status import SharedKey


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def dropped_notes(balancer: BalancerDaemon) -> list[dict[str, int]]:
    items, _ = balancer.mbeans.notifications.since(0)
    return [n.data["byReason"] for n in items if n.type == "lbmgmt.reports.dropped"]


def test_dropped_reports_notification_is_rate_limited():
    clock = Clock()
    balancer = BalancerDaemon(BalancerConfig(key=SharedKey("notify")), clock=clock,
                              monotonic=clock)
    for _ in range(50):
        balancer.handle_datagram(b"LB" + bytes(100))
    balancer.beans.tick(clock())
    assert dropped_notes(balancer) == [{"malformed": 50}]

    for _ in range(50):
        balancer.handle_datagram(b"LB" + bytes(100))
    clock.now += DROP_NOTIFY_INTERVAL - 0.1  # sweeps keep running inside the interval
    balancer.beans.tick(clock())
    assert dropped_notes(balancer) == [{"malformed": 50}]  # a hundred drops, one notice

    clock.now += 0.2
    balancer.beans.tick(clock())  # the interval has passed: the rest, summed
    assert dropped_notes(balancer) == [{"malformed": 50}, {"malformed": 50}]
    clock.now += DROP_NOTIFY_INTERVAL
    balancer.beans.tick(clock())
    assert len(dropped_notes(balancer)) == 2  # nothing new, nothing said
