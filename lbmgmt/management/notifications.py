"""Notifications: what happened, in order, in a bounded buffer.

Clients poll with the last sequence number they saw (and the epoch it came
from: numbers start again with every process); a client that falls more than
the buffer behind is told how many it lost instead of silently missing them.
Pure: ``now`` is passed in, waiting is the caller's business.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CAPACITY = 1000

# Types, JMX-style dotted names. jmx.attribute.change is JMX's own.
SERVER_JOINED = "lbmgmt.server.joined"
SERVER_LEFT = "lbmgmt.server.left"
SERVER_PAUSED = "lbmgmt.server.paused"
SERVER_UNPAUSED = "lbmgmt.server.unpaused"
SERVER_DRAINED = "lbmgmt.server.drained"
SERVER_UNDRAINED = "lbmgmt.server.undrained"
SERVER_CANNOT_STAY = "lbmgmt.server.cannotStay"
REPORTS_DROPPED = "lbmgmt.reports.dropped"
SENDER_PAUSED = "lbmgmt.sender.paused"
SENDER_UNPAUSED = "lbmgmt.sender.unpaused"
TARGETS_RELOADED = "lbmgmt.sender.targets.reloaded"
ATTRIBUTE_CHANGE = "jmx.attribute.change"


@dataclass(frozen=True, slots=True)
class Notification:
    type: str
    source: str  # object name of the emitting MBean
    sequence: int
    timestamp: float  # seconds since the epoch
    message: str
    data: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "source": self.source, "sequence": self.sequence,
                "timestamp": round(self.timestamp, 3), "message": self.message,
                "data": self.data}


@dataclass(slots=True)
class NotificationBuffer:
    capacity: int = DEFAULT_CAPACITY
    # Which numbering the sequence numbers belong to: new with each process, so a client
    # that polls across a restart is told its numbers mean nothing here any more.
    epoch: str = field(default_factory=lambda: secrets.token_hex(8))
    _items: deque[Notification] = field(default_factory=deque)
    _sequence: int = 0
    listeners: list[Callable[[Notification], None]] = field(default_factory=list)

    @property
    def last_sequence(self) -> int:
        return self._sequence

    def emit(self, type_: str, source: str, message: str, data: Any = None, *,
             now: float) -> Notification:
        self._sequence += 1
        item = Notification(type_, source, self._sequence, now, message, data)
        self._items.append(item)
        while len(self._items) > self.capacity:
            self._items.popleft()
        for listener in self.listeners:
            listener(item)
        return item

    def since(self, sequence: int, limit: int = 500) -> tuple[list[Notification], int]:
        """Notifications after ``sequence`` (at most ``limit``), and how many were lost."""
        if not self._items:
            return [], 0
        oldest = self._items[0].sequence
        lost = max(0, oldest - sequence - 1)
        skip = max(0, sequence - oldest + 1)
        out = [self._items[i] for i in range(skip, min(len(self._items), skip + limit))]
        return out, lost
