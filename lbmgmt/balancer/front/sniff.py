"""Which protocol a connection on the client port speaks, sans-IO.

The first byte tells RTMP: its handshake opens with its version byte (3, or 6,
8 or 9 for the encrypted variants, which ``ServerConnection`` then refuses
with a reason). Anything else is a request line, HTTP's or RTSP's, which share
methods (OPTIONS, GET) and differ in the version at the line's end
(``HTTP/1.1``, ``RTSP/1.0``): where RTSP is served the sniffer waits for the
first line (at most ``max_line`` bytes: past that it is HTTP's to refuse).
A request target holds no space, so " RTSP/" in the line can only be its
version. A connection that says nothing has ``timeout`` seconds from ``now``
at construction to say it: ``get_timer()``, then ``handle_timer(now)`` past it
gives one ``TimedOut``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lbmgmt.rtmp import handshake
from lbmgmt.rtmp.server import TimedOut

RTMP_FIRST_BYTES = frozenset((handshake.VERSION, *handshake.ENCRYPTED_VERSIONS))
RTMP, HTTP, RTSP = "rtmp", "http", "rtsp"


@dataclass(frozen=True, slots=True)
class Sniffed:
    """The protocol is known; ``data`` is every byte read so far, to hand on."""

    protocol: str  # RTMP, HTTP or RTSP
    data: bytes


SniffEvent = Sniffed | TimedOut


class ProtocolSniffer:
    """Decides once; ``timeout`` in seconds (None: no deadline)."""

    # (slots: one per connection)
    __slots__ = ("_buffer", "done", "max_line", "rtsp", "started", "timeout")

    def __init__(self, *, timeout: float | None, now: float, rtsp: bool = False,
                 max_line: int = 8192) -> None:
        self.timeout = timeout
        self.rtsp = rtsp  # tell RTSP from HTTP (else anything not RTMP is HTTP)
        self.max_line = max_line
        self.started = now  # when the connection opened: every head deadline counts from it
        self._buffer: bytearray | None = None  # a request line begun
        self.done = False  # decided or timed out: no more events, no timer

    def receive_data(self, data: bytes, now: float | None = None) -> list[SniffEvent]:
        """``Sniffed`` once the protocol is known; ``now`` only for the timers' shape."""
        if self.done or not data:
            return []
        buffered = self._buffer
        if not buffered and data[0] in RTMP_FIRST_BYTES:
            self.done = True
            return [Sniffed(RTMP, data)]
        if not self.rtsp or not (buffered or 65 <= data[0] <= 90):
            # (every RTSP method begins with a capital letter: a TLS hello, say, is
            # HTTP's to refuse at once)
            self.done = True
            return [Sniffed(HTTP, data)]
        # (only the new bytes are searched: a client sending a byte at a time costs
        # a byte's work each time, not the whole line's)
        end = data.find(b"\n", 0, self.max_line)
        if end < 0 and (len(buffered) if buffered else 0) + len(data) < self.max_line:
            if buffered is None:
                self._buffer = bytearray(data)
            else:
                buffered += data
            return []
        self.done = True
        if buffered:
            end = -1 if end < 0 else len(buffered) + end
            data = bytes(buffered) + data
            self._buffer = None
        if end < 0:  # no line within max_line bytes: HTTP refuses it (414)
            return [Sniffed(HTTP, data)]
        return [Sniffed(RTSP if data.find(b" RTSP/", 0, end) >= 0 else HTTP, data)]

    @property
    def buffered(self) -> int:
        return len(self._buffer) if self._buffer else 0

    def get_timer(self) -> float | None:
        if self.done or self.timeout is None:
            return None
        return self.started + self.timeout

    def handle_timer(self, now: float) -> list[SniffEvent]:
        """Past the deadline: ``TimedOut`` for a silent connection; for a request line
        begun and never finished, ``Sniffed`` HTTP with its bytes, whose own head deadline
        (from ``started``) has passed too: HTTP answers it 408, as any slow head."""
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return []
        self.done = True
        if self._buffer:
            data, self._buffer = bytes(self._buffer), None
            return [Sniffed(HTTP, data)]
        return [TimedOut("no first byte")]
