"""The balancer's notifications, with a hand-driven clock: no sockets, no sleeping."""

from __future__ import annotations

from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.mbeans import DROP_NOTIFY_INTERVAL, BalancerBeans
from lbmgmt.clocks import Clocks
from lbmgmt.management.notifications import NotificationBuffer
from lbmgmt.management.server import MBeanServer
from lbmgmt.status import SharedKey


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def dropped_notes(mbeans: MBeanServer) -> list[dict[str, int]]:
    items, _ = mbeans.notifications.since(0)
    return [n.data["byReason"] for n in items if n.type == "lbmgmt.reports.dropped"]


def test_dropped_reports_notification_is_rate_limited():
    clock = Clock()
    core = BalancerCore(SharedKey("notify"), timeout=5.0, grace=0.5, max_clock_skew=30.0)
    mbeans = MBeanServer(NotificationBuffer(), clock=clock)
    beans = BalancerBeans(core, Clocks(clock, clock), mbeans)

    def garbage() -> None:
        core.receive_datagram(b"LB" + bytes(100), now=clock(), wall=clock())
    for _ in range(50):
        garbage()
    beans.tick(clock())
    assert dropped_notes(mbeans) == [{"malformed": 50}]

    for _ in range(50):
        garbage()
    clock.now += DROP_NOTIFY_INTERVAL - 0.1  # sweeps keep running inside the interval
    beans.tick(clock())
    assert dropped_notes(mbeans) == [{"malformed": 50}]  # a hundred drops, one notice

    clock.now += 0.2
    beans.tick(clock())  # the interval has passed: the rest, summed
    assert dropped_notes(mbeans) == [{"malformed": 50}, {"malformed": 50}]
    clock.now += DROP_NOTIFY_INTERVAL
    beans.tick(clock())
    assert len(dropped_notes(mbeans)) == 2  # nothing new, nothing said
