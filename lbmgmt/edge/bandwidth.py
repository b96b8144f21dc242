"""An edge's outbound bandwidth, from a network interface's byte counter.

``InterfaceBandwidth`` reads ``/sys/class/net/<interface>/statistics/tx_bytes``
(the kernel's count of bytes sent) and gives bits per second over at least
``window`` seconds (the edge's report interval: a rate over one 50 ms load
sample would read bursty traffic as nothing between its bursts); between two
windows it gives the last one's rate. ``rate(now, window)`` is sans-clock
(``now`` passed in). The first read has nothing to compare with and gives None;
so does a counter that went backwards (the interface was reset), once.
``CounterRate`` is that arithmetic alone, for any byte counter (the mediamtx
monitor's). nginx-rtmp's own figure (``bw_out`` on its stat page) comes from the
nginx-rtmp monitor instead.
"""

from __future__ import annotations

from pathlib import Path

SYS_NET = Path("/sys/class/net")


class BandwidthError(OSError):
    pass


class CounterRate:
    """Bits per second of a byte counter that only grows, over whole windows of at least
    ``window`` seconds; between two windows, the last one's rate (None before the first
    one, and again after the counter went backwards)."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None  # the window's start: time, bytes
        self._rate: float | None = None

    def update(self, now: float, sent: int, window: float = 0.0) -> float | None:
        last = self._last
        if last is None or sent < last[1]:
            self._last, self._rate = (now, sent), None
            return None
        elapsed = now - last[0]
        if elapsed > 0 and elapsed >= window:
            self._rate = (sent - last[1]) * 8 / elapsed
            self._last = (now, sent)
        return self._rate


class InterfaceBandwidth:
    def __init__(self, interface: str, *, root: Path = SYS_NET) -> None:
        if not interface or "/" in interface or interface in (".", ".."):
            raise ValueError(f"not an interface name: {interface!r}")
        self.interface = interface
        self.path = root / interface / "statistics" / "tx_bytes"
        self._counter = CounterRate()

    def check(self) -> None:
        """BandwidthError if the counter cannot be read (no such interface)."""
        self._read()

    def _read(self) -> int:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise BandwidthError(f"cannot read {self.path}: {exc}") from None

    def rate(self, now: float, window: float = 0.0) -> float | None:
        """Bits per second over the last whole window of at least ``window`` seconds
        (None before the first one)."""
        return self._counter.update(now, self._read(), window)
