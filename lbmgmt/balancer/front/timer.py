"""A connection's one loop timer, following its sans-IO object's ``get_timer()``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ConnectionTimer:
    """A connection's one loop timer, following its protocol object's ``get_timer()``.

    aioquic's shape: after every receive and every expiry the owner calls ``update``
    with the protocol's next deadline (absolute, ``loop.time()``'s clock), and
    ``expired(now)`` gets a ``now`` never before that deadline.

    A deadline that only moves later (a keep-alive deadline, after every request)
    does not touch the loop: the armed handle stays, and when it fires early it is
    re-armed at the deadline wanted then. Only a deadline earlier than the armed
    one replaces the handle. So a busy connection costs no timer work per request.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 expired: Callable[[float], None]) -> None:
        self._loop = loop
        self._expired = expired
        self._handle: asyncio.TimerHandle | None = None
        self._armed: float | None = None  # when the loop handle fires
        self.at: float | None = None  # the deadline wanted, None for none

    def update(self, at: float | None) -> None:
        self.at = at
        if at is None:
            return  # an armed handle fires and finds nothing to do
        armed = self._armed
        if self._handle is not None and armed is not None and armed <= at:
            return  # it fires first and re-arms then
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(at, self._fire)
        self._armed = at

    def cancel(self) -> None:
        """No deadline, and no loop handle left (the connection is gone)."""
        self.at = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = self._armed = None

    def close(self) -> None:
        """``cancel``, for good: lets go of the callback (its connection's bound method,
        a reference cycle otherwise left for the garbage collector)."""
        self.cancel()
        self._expired = _ignore

    def _fire(self) -> None:
        self._handle = self._armed = None
        at = self.at
        if at is None:
            return
        now = self._loop.time()
        if at > now + 0.001:  # moved later since this handle was armed: wait for it
            self._handle = self._loop.call_at(at, self._fire)
            self._armed = at
            return
        self.at = None
        # A loop runs a timer up to its clock resolution early: the protocol must still
        # see its deadline reached, or it would ask for the same deadline again at once.
        self._expired(max(at, now))


def _ignore(now: float) -> None:
    """A closed timer's callback."""
