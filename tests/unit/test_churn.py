"""5000 senders come and go (bench/churn.py, in a fresh process with a hand-moved clock):
their state is let go, the memory comes back, and a notification poller misses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_a_fleet_that_came_and_went_leaves_no_state_and_a_poller_misses_nothing():
    out = subprocess.run([sys.executable, "-m", "bench.churn", "--json"], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=600)
    result = json.loads(out.stdout)
    assert result["receiver_peers"] == 0 and result["gate_entries"] == 0
    # every join and leave reached the poller, coalesced past 20 a second
    assert result["events_seen"] == result["events"] == 10_000
    assert result["notifications_lost"] == 0
    # Peak +45 MiB. Without the prunes and the trim, +36 MiB stayed (1.72 of before); the
    # goal is 1.10, and what stays (1.21 measured) is Python's allocator keeping arenas
    # that a few long-lived objects made during the churn pin (docs/performance.md).
    assert result["after_over_before"] < 1.35, result
