"""Warnings an operator must act on, at most once per interval per cause: sans-IO.

A wrong key or a skewed clock makes an edge send a rejected report every few
seconds, for as long as nobody fixes it; a flood sends thousands a second.
``Throttle`` lets the first warning for a cause through, then one per
``interval``, each saying how many it held back, and remembers at most
``max_keys`` causes (the least recently warned go first), so a flood from
many sources costs bounded memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class Throttle:
    def __init__(self, interval: float, *, max_keys: int = 1024) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()  # at, held

    def allow(self, key: Hashable, now: float) -> int | None:
        """None: stay quiet (counted); else say it, and how many were held back since."""
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return None
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        if len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return 0 if last is None else last[1]
