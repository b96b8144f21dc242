"""Churn: 5000 senders come, report and time out; does the balancer's memory come back,
and does a notification poller keep up?

    python -m bench.churn [--senders 5000] [--json]

In a fresh process: a balancer (core, MBeans, notifications; no sockets) driven by a
hand-moved clock, so the whole life of the churn (joins, timeouts, the 5 minutes a
departed entry waits for its return, the minute replay state is kept) takes seconds.
Prints the resident set size before, at the peak and after, and how many join and
leave events a poller that reads every sweep saw or lost. tests/unit/test_churn.py
runs it and holds the after/before ratio to 1.10 and the losses to 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import uuid

from lbmgmt.balancer.config import BalancerConfig
from lbmgmt.balancer.daemon import BalancerDaemon
from lbmgmt.balancer.registry import REJOIN_WINDOW
from lbmgmt.clocks import Clocks
from lbmgmt.management import notifications as note
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey

KEY = SharedKey("bench-churn")
WALL = 1_800_000_000.0


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def clocks(self) -> Clocks:
        return Clocks(wall=lambda: WALL + self.t, monotonic=lambda: 1000.0 + self.t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=5000)
    parser.add_argument("--reports", type=int, default=3, help="reports per sender")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    clock = Clock()
    daemon = BalancerDaemon(BalancerConfig(key=KEY), clocks=clock.clocks())
    core, buffer = daemon.core, daemon.mbeans.notifications
    seen = lost = 0
    next_seq = 0

    def sweep() -> None:
        nonlocal seen, lost, next_seq
        daemon.sweep()
        items, missed = buffer.since(next_seq, limit=10_000)
        lost += missed
        for item in items:
            if item.type in (note.SERVER_JOINED, note.SERVER_LEFT):
                seen += (item.data or {}).get("coalesced", 1)
            next_seq = item.sequence

    def advance(seconds: float) -> None:
        end = clock.t + seconds
        while clock.t < end:
            clock.t = round(clock.t + 0.25, 2)
            sweep()

    gc.collect()
    before = rss()
    sealers = [ReportSealer(uuid.uuid4()) for _ in range(args.senders)]
    for _ in range(args.reports):
        for i, sealer in enumerate(sealers):
            report = Report(EdgeState.RUNNING, f"edge{i}.example:1935", i % 50, 1000)
            clocks = clock.clocks()
            core.receive_datagram(sealer.seal(report, KEY, now=clocks.wall()),
                                  now=clocks.monotonic(), wall=clocks.wall(),
                                  source=(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 1934))
        advance(1.0)
    peak = rss()
    assert len(core.registry) == args.senders, len(core.registry)
    del sealers
    # past every window: their time (5 s), their replay state (60 s), the wait for a
    # return (REJOIN_WINDOW)
    advance(REJOIN_WINDOW + 5)
    assert len(core.registry) == 0 and core.registry.departed_count == 0
    gc.collect()
    after = rss()
    result = {"bench": "churn", "senders": args.senders, "rss_before": before,
              "rss_peak": peak, "rss_after": after, "after_over_before": after / before,
              "events": 2 * args.senders, "events_seen": seen, "notifications_lost": lost,
              "receiver_peers": core.receiver.peer_count, "gate_entries": len(core.gate)}
    if args.json:
        print(json.dumps(result))
    else:
        mib = 1 << 20
        print(f"RSS before {before / mib:.1f} MiB, peak {peak / mib:.1f} MiB, after "
              f"{after / mib:.1f} MiB ({after / before:.3f} of before); join/leave events "
              f"{seen} of {2 * args.senders} seen by the poller, {lost} notifications lost")


if __name__ == "__main__":
    main()
