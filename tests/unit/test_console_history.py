"""lb-console's rates: from counter deltas over a window, not from one refresh to the next."""

from __future__ import annotations

import pytest

from tui.history import RATE_WINDOW, Series


def test_a_rate_is_the_counters_delta_over_the_window_not_per_refresh():
    series = Series()
    count = 0
    for tick in range(30):  # 0.4 a second, polled every second: +1 on some ticks only
        if tick % 5 in (0, 3):
            count += 1
        series.add(float(tick), count)
        if tick >= RATE_WINDOW:
            assert series.rate() == pytest.approx(0.4, abs=0.1)  # never 0.0 then 1.0
    assert series.rate(window=1.0) in (0.0, 1.0)  # what a per-refresh rate showed


def test_a_counter_reset_gives_no_rate_until_the_window_is_past_it():
    series = Series()
    for tick, value in enumerate([10, 20, 30, 2, 4]):
        series.add(float(tick), value)
    assert series.rate() is None  # the daemon restarted within the window
    assert Series().rate() is None
