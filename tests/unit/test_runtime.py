"""The Runtime MBean's arithmetic: loop-lag quantiles and CPU %, time passed in."""

from __future__ import annotations

from lbmgmt.management.runtime import CPU_WINDOW, LAG_WINDOW, RuntimeStats


def test_lag_quantiles_cover_the_last_minute_only():
    stats = RuntimeStats()
    stats.record(0.0, 5.0, 0.0)  # a 5 s stall, long ago
    for i in range(1, 101):  # then 100 samples: 1..100 ms
        stats.record(LAG_WINDOW + i / 4, i / 1000, 0.0)
    lag = stats.lag_ms()
    assert lag == {"p50": 51.0, "p99": 100.0, "max": 100.0}  # the stall has left the window
    stats.record(LAG_WINDOW + 26, -0.001, 0.0)  # a timer that ran early counts as 0
    assert stats.lag_ms()["max"] == 100.0
    assert RuntimeStats().lag_ms() == {"p50": 0.0, "p99": 0.0, "max": 0.0}


def test_cpu_percent_is_cpu_time_per_wall_time_over_the_last_seconds():
    stats = RuntimeStats()
    assert stats.cpu_percent() == 0.0
    stats.record(0.0, 0.0, 10.0)
    stats.record(1.0, 0.0, 10.5)  # half a core
    assert stats.cpu_percent() == 50.0
    for t in range(2, 30):  # then idle: the busy second leaves the window
        stats.record(float(t), 0.0, 10.5)
    assert stats.cpu_percent() == 0.0
    assert stats.cpu[-1][0] - stats.cpu[0][0] <= CPU_WINDOW + 1
