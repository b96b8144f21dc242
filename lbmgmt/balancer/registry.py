"""The balancer's view of its edges, sans-IO: reports and ``now`` in, events out.

Keyed by the edge's GUID, so a restarted edge (new boot id) updates its own
entry instead of appearing twice. ``now`` is a monotonic clock in seconds; the
registry never reads a clock, so timeouts are tested without sleeping.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from lbmgmt.status import EdgeState, ReportAccepted

DEFAULT_TIMEOUT = 5.0


class LeaveReason(enum.StrEnum):
    STOPPED = "stopped"
    TIMED_OUT = "timed-out"
    REMOVED = "removed"


@dataclass(slots=True, eq=False)
class ServerEntry:
    guid: uuid.UUID
    boot_id: bytes
    address: str
    state: EdgeState
    load: float
    capacity: float | None
    interval: float  # the edge's own report interval, seconds
    first_seen: float
    last_report: float  # receiver's monotonic clock
    sent_at: float  # sender's wall clock of the last report
    reports_received: int = 1
    redirects_since_report: int = 0
    redirects_total: int = 0
    drained: bool = False  # balancer-side: no new clients, whatever the edge says

    @property
    def available(self) -> bool:
        return self.state is EdgeState.RUNNING and not self.drained

    @property
    def effective_load(self) -> float:
        """Last reported load plus the clients we sent since: our best guess of now."""
        return self.load + self.redirects_since_report

    def seconds_since_report(self, now: float) -> float:
        return max(0.0, now - self.last_report)


@dataclass(frozen=True, slots=True)
class ServerJoined:
    server: ServerEntry


@dataclass(frozen=True, slots=True)
class ServerLeft:
    server: ServerEntry
    reason: LeaveReason


@dataclass(frozen=True, slots=True)
class ServerStateChanged:
    server: ServerEntry
    old: EdgeState
    new: EdgeState


@dataclass(frozen=True, slots=True)
class ServerDrainChanged:
    server: ServerEntry
    drained: bool


RegistryEvent = ServerJoined | ServerLeft | ServerStateChanged | ServerDrainChanged


@dataclass(slots=True)
class ServerRegistry:
    timeout: float = DEFAULT_TIMEOUT
    _servers: dict[uuid.UUID, ServerEntry] = field(default_factory=dict)
    # Drained GUIDs outlive their entries: a drained edge that restarts stays drained.
    drained: set[uuid.UUID] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self._servers)

    def __iter__(self) -> Iterator[ServerEntry]:
        return iter(list(self._servers.values()))

    def get(self, guid: uuid.UUID) -> ServerEntry | None:
        return self._servers.get(guid)

    def is_live(self, entry: ServerEntry, now: float) -> bool:
        return now - entry.last_report <= self.timeout

    def available(self, now: float) -> Iterator[ServerEntry]:
        """Edges that may take a new client now (live, running, not drained)."""
        timeout = self.timeout
        for entry in self._servers.values():
            if entry.available and now - entry.last_report <= timeout:
                yield entry

    def apply(self, event: ReportAccepted, now: float) -> list[RegistryEvent]:
        report = event.report
        entry = self._servers.get(event.guid)
        if report.state is EdgeState.STOPPING:
            if entry is None:
                return []
            del self._servers[event.guid]
            entry.state = EdgeState.STOPPING
            return [ServerLeft(entry, LeaveReason.STOPPED)]
        if entry is None:
            entry = ServerEntry(guid=event.guid, boot_id=event.boot_id, address=report.address,
                                state=report.state, load=report.load, capacity=report.capacity,
                                interval=report.interval_ms / 1000, first_seen=now,
                                last_report=now, sent_at=event.sent_at,
                                drained=event.guid in self.drained)
            self._servers[event.guid] = entry
            return [ServerJoined(entry)]
        old_state = entry.state
        entry.boot_id = event.boot_id
        entry.address = report.address
        entry.state = report.state
        entry.load = report.load
        entry.capacity = report.capacity
        entry.interval = report.interval_ms / 1000
        entry.last_report = now
        entry.sent_at = event.sent_at
        entry.reports_received += 1
        entry.redirects_since_report = 0
        if old_state is not report.state:
            return [ServerStateChanged(entry, old_state, report.state)]
        return []

    def expire(self, now: float) -> list[RegistryEvent]:
        gone = [e for e in self._servers.values() if not self.is_live(e, now)]
        for entry in gone:
            del self._servers[entry.guid]
        return [ServerLeft(entry, LeaveReason.TIMED_OUT) for entry in gone]

    def remove(self, guid: uuid.UUID) -> list[RegistryEvent]:
        entry = self._servers.pop(guid, None)
        return [] if entry is None else [ServerLeft(entry, LeaveReason.REMOVED)]

    def set_drained(self, guid: uuid.UUID, drained: bool) -> list[RegistryEvent]:
        """Balancer-side drain (as HAProxy's): no new clients, whatever the edge reports.

        Raises KeyError for a GUID the registry does not know.
        """
        entry = self._servers.get(guid)
        if entry is None:
            raise KeyError(f"no server {guid}")
        (self.drained.add if drained else self.drained.discard)(guid)
        if entry.drained == drained:
            return []
        entry.drained = drained
        return [ServerDrainChanged(entry, drained)]

    def count_redirect(self, entry: ServerEntry) -> None:
        entry.redirects_since_report += 1
        entry.redirects_total += 1

    def available_count(self, now: float) -> int:
        return sum(1 for _ in self.available(now))
