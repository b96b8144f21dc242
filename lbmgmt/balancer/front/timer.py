"""A connection's one loop timer, following its sans-IO object's ``get_timer()``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class ConnectionTimer:
    """A connection's one loop timer, following its protocol object's ``get_timer()``.

    aioquic's shape: after every receive and every expiry the owner calls ``update``
    with the protocol's next deadline (absolute, ``loop.time()``'s clock); the loop
    handle is replaced only when that deadline changed, and ``expired(now)`` gets a
    ``now`` never before the deadline it was armed for.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 expired: Callable[[float], None]) -> None:
        self._loop = loop
        self._expired = expired
        self._handle: asyncio.TimerHandle | None = None
        self.at: float | None = None  # the armed deadline, None when disarmed

    def update(self, at: float | None) -> None:
        if self._handle is not None and at != self.at:
            self._handle.cancel()
            self._handle = None
        if self._handle is None and at is not None:
            self._handle = self._loop.call_at(at, self._fire)
        self.at = at

    def cancel(self) -> None:
        self.update(None)

    def _fire(self) -> None:
        at, self._handle, self.at = self.at, None, None
        assert at is not None
        # A loop runs a timer up to its clock resolution early: the protocol must still
        # see its deadline reached, or it would ask for the same deadline again at once.
        self._expired(max(at, self._loop.time()))
