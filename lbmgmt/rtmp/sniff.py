"""Which protocol a connection on a port shared with HTTP speaks, sans-IO.

The first byte decides: an RTMP handshake opens with its version byte (3, or
6, 8 or 9 for the encrypted variants, which ``ServerConnection`` then refuses
with a reason); anything else is HTTP. A connection that says nothing has
``timeout`` seconds from ``now`` at construction to say it, with the timers of
``ServerConnection``: ``get_timer()``, then ``handle_timer(now)`` past it gives
one ``TimedOut``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbmgmt.rtmp import handshake
from lbmgmt.rtmp.server import TimedOut

RTMP_FIRST_BYTES = frozenset((handshake.VERSION, *handshake.ENCRYPTED_VERSIONS))


@dataclass(frozen=True, slots=True)
class Sniffed:
    """The first byte arrived: an RTMP handshake (``rtmp``) or not (HTTP)."""

    rtmp: bool


SniffEvent = Sniffed | TimedOut


class FirstByteSniffer:
    """Waits for the first byte, once; ``timeout`` in seconds, None: no deadline."""

    # (slots: one per connection)
    __slots__ = ("_started", "done", "timeout")

    def __init__(self, *, timeout: float | None, now: float) -> None:
        self.timeout = timeout
        self._started = now
        self.done = False  # decided or timed out: no more events, no timer

    def receive_data(self, data: bytes, now: float | None = None) -> list[SniffEvent]:
        """``Sniffed`` for the first non-empty data; ``now`` only for the timers' shape."""
        if self.done or not data:
            return []
        self.done = True
        return [Sniffed(data[0] in RTMP_FIRST_BYTES)]

    def get_timer(self) -> float | None:
        if self.done or self.timeout is None:
            return None
        return self._started + self.timeout

    def handle_timer(self, now: float) -> list[SniffEvent]:
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return []
        self.done = True
        return [TimedOut("no first byte")]
