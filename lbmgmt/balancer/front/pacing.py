"""Fair reading: no connection holds the event loop, however fast it sends.

``SlicedInput`` hands a connection's bytes to its parser at most ``budget``
bytes per loop turn. When more came in, it pauses the transport's reading and
hands the rest on over the following turns (each after every other ready
callback, datagrams from edges included), resuming reading once it caught up.
A connection therefore costs the loop one parser call of at most ``budget``
bytes per turn, and holds at most one read (the transport's buffer) plus what
it was handed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class SlicedInput:
    # (slots: one per connection)
    __slots__ = (
        "_buffer", "_handle", "_held", "_loop", "_next", "_paused", "_transport", "budget",
        "stopped"
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport,
                 handle: Callable[[bytes], None], *, budget: int) -> None:
        self._loop = loop
        self._transport = transport
        self._handle = handle
        self.budget = budget
        self._buffer = bytearray()
        self._next: asyncio.Handle | None = None
        self._paused = False
        self._held = False
        self.stopped = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def paused(self) -> bool:
        """This reader paused the transport's reading (and has not resumed it)."""
        return self._paused

    def take(self) -> bytes:
        """Everything not handed on yet, now; the reader keeps nothing."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    def feed(self, data: bytes) -> None:
        if self.stopped:
            return
        if not self._buffer and not self._held and self._next is None and len(data) <= self.budget:
            self._handle(data)  # the common case: one small read, handled at once
            return
        self._buffer += data
        if self._next is None and not self._held:
            self._turn()

    def hold(self) -> None:
        """Hand nothing on until ``release`` (the parser waits for something)."""
        self._held = True
        self._pause()
        if self._next is not None:
            self._next.cancel()
            self._next = None

    def release(self) -> None:
        self._held = False
        if self.stopped:
            return
        if self._buffer:
            self._next = self._loop.call_soon(self._turn)
        else:
            self._resume()

    def stop(self) -> None:
        """Nothing more is handed on (the connection is closing).

        The reader lets go of its handler too: the handler is its connection's bound
        method, a reference cycle otherwise left for the garbage collector.
        """
        self.stopped = True
        self._buffer.clear()
        self._handle = _drop
        if self._next is not None:
            self._next.cancel()
            self._next = None

    def _turn(self) -> None:
        self._next = None
        if self.stopped or self._held:
            return
        chunk = bytes(self._buffer[:self.budget])
        del self._buffer[:self.budget]
        if self._buffer:
            self._pause()
            self._next = self._loop.call_soon(self._turn)
        else:
            self._resume()
        self._handle(chunk)

    def _pause(self) -> None:
        if not self._paused and not self.stopped and not self._transport.is_closing():
            self._paused = True
            self._transport.pause_reading()  # type: ignore[attr-defined]

    def _resume(self) -> None:
        if self._paused and not self.stopped and not self._transport.is_closing():
            self._paused = False
            self._transport.resume_reading()  # type: ignore[attr-defined]


def _drop(data: bytes) -> None:
    """A stopped reader's handler."""
