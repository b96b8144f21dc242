"""Numbers over time, for sparklines, bars and rates; pure (time passed in)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

BLOCKS = "▁▂▃▄▅▆▇█"
DEFAULT_POINTS = 120
RATE_WINDOW = 10.0  # seconds a rate is taken over


@dataclass(slots=True)
class Series:
    points: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=DEFAULT_POINTS))

    def add(self, now: float, value: float) -> None:
        self.points.append((now, float(value)))

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.points]

    @property
    def last(self) -> float | None:
        return self.points[-1][1] if self.points else None

    def rate(self, window: float = RATE_WINDOW) -> float | None:
        """Per second over the last ``window`` seconds, for counters: the delta from the
        oldest point in the window to the last (one refresh to the next swings with when
        the polls fell: 0.0, then 1.0, for a true 0.4/s)."""
        if len(self.points) < 2:
            return None
        t1, v1 = self.points[-1]
        t0, v0 = self.points[-2]
        for t, v in reversed(self.points):
            if t < t1 - window:
                break
            t0, v0 = t, v
        if t1 <= t0 or v1 < v0:  # a counter reset (daemon restart): no rate this time
            return None
        return (v1 - v0) / (t1 - t0)


def sparkline(values: list[float], width: int = 12) -> str:
    """The last ``width`` values as block characters, scaled from 0 to their maximum."""
    tail = values[-width:]
    if not tail:
        return ""
    top = max(tail)
    if top <= 0:
        return BLOCKS[0] * len(tail)
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int(v / top * (len(BLOCKS) - 1) + 0.5))]
                   for v in tail)


def bar(value: float, maximum: float, width: int = 10) -> str:
    if maximum <= 0 or value <= 0:
        return "·" * width
    filled = max(1, round(min(1.0, value / maximum) * width))
    return "█" * filled + "·" * (width - filled)


class History:
    """Series by key (an edge's load, a counter...), forgetting keys not seen lately."""

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}

    def add(self, key: str, now: float, value: float) -> Series:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        series.add(now, value)
        return series

    def get(self, key: str) -> Series:
        return self.series.get(key) or Series()

    def keep_only(self, keys: set[str], prefix: str) -> None:
        for key in [k for k in self.series if k.startswith(prefix) and k not in keys]:
            del self.series[key]
