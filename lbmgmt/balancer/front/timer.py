"""Connections' deadlines on the loop: ``ConnectionTimer`` each, ``Deadlines`` shared.

A connection keeps one ``ConnectionTimer`` at its sans-IO object's ``get_timer()``.
The timers of a front share one ``Deadlines``: one loop handle for all of them,
armed at the earliest deadline, and each timer a set entry in a bucket of
``RESOLUTION`` seconds. A loop handle of its own per connection (``call_at`` and
a cancel for every connection accepted) cost the client port 15 % of its
one-request-per-connection rate (bench.http); a set entry costs next to nothing.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

LATE = 0.001  # a loop runs a handle up to its clock's resolution early: this is on time


class Deadlines:
    """Many timers' deadlines on one loop handle, armed at the earliest of them.

    Timers are kept in buckets of ``RESOLUTION`` seconds by deadline (a heap of the
    bucket numbers in use). The handle is armed at a deadline exactly: at the one
    that armed it, or when it fires, at the earliest of the next bucket. A timer
    whose deadline moved later since it was filed is filed again when its bucket
    comes up; one removed leaves its bucket at once, and with no timer left the
    handle is cancelled.
    """

    RESOLUTION = 0.05  # seconds per bucket

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buckets: dict[int, dict[ConnectionTimer, float]] = {}  # timer: filed at
        self._ticks: list[int] = []  # bucket numbers, a heap (lazily cleaned)
        self._count = 0  # timers filed
        self._handle: asyncio.TimerHandle | None = None
        self._armed: float | None = None
        self._firing = False  # timers are coming up: the handle is armed after them

    def __len__(self) -> int:
        return self._count

    def file(self, timer: ConnectionTimer, at: float) -> int:
        """File ``timer`` under ``at``; returns its bucket (for ``remove``)."""
        tick = int(at / self.RESOLUTION)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = {}
            heapq.heappush(self._ticks, tick)
        bucket[timer] = at
        self._count += 1
        if not self._firing and (self._armed is None or at < self._armed):
            self._arm(timer.loop, at)
        return tick

    def remove(self, timer: ConnectionTimer, tick: int) -> None:
        bucket = self._buckets.get(tick)
        if bucket is None or bucket.pop(timer, None) is None:
            return  # not filed there
        self._count -= 1
        if self._count == 0:  # nothing left to wait for: no loop handle either
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self._armed = None
            self._buckets.clear()
            self._ticks.clear()

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        self._loop = loop
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_at(at, self._fire)
        self._armed = at

    def _fire(self) -> None:
        self._handle = self._armed = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        due_tick = int((now + LATE) / self.RESOLUTION)
        ticks, buckets = self._ticks, self._buckets
        came_up: list[ConnectionTimer] = []
        while ticks and ticks[0] <= due_tick:
            bucket = buckets.pop(heapq.heappop(ticks), None)
            if bucket:
                self._count -= len(bucket)
                came_up += bucket
        self._firing = True
        try:
            for timer in came_up:  # (each may file itself again, later)
                timer.came_up(now)
        finally:
            self._firing = False
        # then the handle, at the earliest deadline of the first bucket, exactly
        while ticks and not buckets.get(ticks[0]):
            buckets.pop(heapq.heappop(ticks), None)
        if ticks and self._count:
            self._arm(loop, min(buckets[ticks[0]].values()))


class ConnectionTimer:
    """A connection's one deadline on the loop, following its protocol object's ``get_timer()``.

    aioquic's shape: after every receive and every expiry the owner calls ``update``
    with the protocol's next deadline (absolute, ``loop.time()``'s clock), and
    ``expired(now)`` gets a ``now`` never before that deadline.

    A deadline that only moves later (a keep-alive deadline, after every request)
    costs no work: the timer stays filed where it is, and when that comes up early
    it is filed again at the deadline wanted then. Only an earlier deadline moves
    it. So a busy connection costs no timer work per request.

    It is filed in ``deadlines``, shared by a front's connections (one loop handle).
    """

    # (slots: one per connection)
    __slots__ = ("loop", "_expired", "_deadlines", "_tick", "filed_at", "at")

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[float], None],
                 deadlines: Deadlines) -> None:
        self.loop = loop
        self._expired = expired
        self._deadlines = deadlines
        self._tick: int | None = None  # the bucket it is filed in
        self.filed_at: float | None = None  # when it comes up
        self.at: float | None = None  # the deadline wanted, None for none

    def update(self, at: float | None) -> None:
        self.at = at
        if at is None:
            return  # if filed, it comes up and finds nothing to do
        filed_at = self.filed_at
        if filed_at is not None and filed_at <= at:
            return  # it comes up first and is filed again then
        self._unfile()
        self._file(at)

    def cancel(self) -> None:
        """No deadline, and nothing filed or armed left (the connection is gone)."""
        self.at = None
        self._unfile()

    def close(self) -> None:
        """``cancel``, for good: lets go of the callback (its connection's bound method,
        a reference cycle otherwise left for the garbage collector)."""
        self.cancel()
        self._expired = _ignore

    def _file(self, at: float) -> None:
        self.filed_at = at
        self._tick = self._deadlines.file(self, at)

    def _unfile(self) -> None:
        if self._tick is not None:
            self._deadlines.remove(self, self._tick)
            self._tick = None
        self.filed_at = None

    def came_up(self, now: float) -> None:
        """Its filing came up (``Deadlines``): expired, or filed again."""
        self._tick = None
        self.filed_at = None
        at = self.at
        if at is None:
            return
        if at > now + LATE:  # moved later since it was filed: wait for it
            self._file(at)
            return
        self.at = None
        # A loop runs a timer up to its clock resolution early: the protocol must still
        # see its deadline reached, or it would ask for the same deadline again at once.
        self._expired(max(at, now))


def _ignore(now: float) -> None:
    """A closed timer's callback."""
