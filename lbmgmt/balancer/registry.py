"""The balancer's view of its edges, sans-IO: reports and ``now`` in, events out.

Keyed by the edge's GUID, so a restarted edge (new boot id) updates its own
entry instead of appearing twice. ``now`` is a monotonic clock in seconds; the
registry never reads a clock, so timeouts are tested without sleeping.

Effective load. Between two reports the balancer works on stale load, so it
adds the clients it sent an edge itself ("JSQ with sparse feedback"). A report
only counts clients already connected when the edge measured, so redirects
handed out shortly before the report was *sent* (within ``grace``, 0.5 s by
default) may not be in it yet: they keep counting, each with the chance it had
not connected, taken as falling linearly from 1 (sent just before the report)
to 0 (sent ``grace`` before it). Counting them fully would count twice those
that had connected; dropping them would forget those that had not. Older
redirects are dropped: the report includes them.
"""

from __future__ import annotations

import enum
import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Protocol

from lbmgmt.status import EdgeState, Report, ReportAccepted

DEFAULT_TIMEOUT = 5.0
DEFAULT_GRACE = 0.5
FRESH_INTERVALS = 3  # older than this many report intervals: chosen only if nothing fresher
MAX_TRANSIT = 2.0  # transit estimates past this are clock skew, not network


class LeaveReason(enum.StrEnum):
    STOPPED = "stopped"
    TIMED_OUT = "timed-out"
    REMOVED = "removed"


@dataclass(slots=True, eq=False)
class ServerEntry:
    """One edge: its last report, as decoded (never copied field by field), and our view."""

    guid: uuid.UUID
    boot_id: bytes
    report: Report  # the last one accepted; a new report field is on it with no change here
    first_seen: float
    last_report: float  # receiver's monotonic clock
    sent_at: float  # sender's wall clock of the last report
    reports_received: int = 1
    redirects_since_report: int = 0
    redirects_total: int = 0
    drained: bool = False  # balancer-side: no new clients, whatever the edge says
    # Times (monotonic) of redirects not surely in a report, and what they add to the
    # load: see the module docstring.
    pending: deque[float] = field(default_factory=deque, repr=False)
    pending_load: float = 0.0
    # The edge's clock less ours when its last report arrived, seconds (transit included):
    # how close it is to max_clock_skew, before it is dropped as stale.
    clock_offset: float = 0.0
    # Read on every redirect, so kept as plain values rather than worked out from the
    # report each time: ``derive`` sets them, and the registry calls it with every report.
    running: bool = field(init=False, default=False)
    """The last report says RUNNING."""
    fresh_for: float = field(init=False, default=0.0)
    """How long a report stays fresh: ``FRESH_INTERVALS`` of the edge's interval."""

    def __post_init__(self) -> None:
        self.derive()

    def derive(self) -> None:
        report = self.report
        self.running = report.state is EdgeState.RUNNING
        self.fresh_for = FRESH_INTERVALS * report.interval_ms / 1000

    @property
    def address(self) -> str:
        return self.report.address

    @property
    def state(self) -> EdgeState:
        return self.report.state

    @property
    def load(self) -> float:
        return self.report.load

    @property
    def capacity(self) -> float | None:
        return self.report.capacity

    @property
    def interval(self) -> float:
        """The edge's own report interval, seconds."""
        return self.report.interval_ms / 1000

    @property
    def willing(self) -> bool:
        """RUNNING and not drained: available if also live (``ServerRegistry.is_available``)."""
        return self.running and not self.drained

    @property
    def effective_load(self) -> float:
        """Last reported load plus the clients we sent that it does not include yet."""
        return self.report.load + self.pending_load

    def is_fresh(self, now: float) -> bool:
        return now - self.last_report <= self.fresh_for

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


class RegistryObserver(Protocol):
    """What a redirector's index needs to hear to stay in step without scanning."""

    def updated(self, entry: ServerEntry) -> None: ...

    def removed(self, entry: ServerEntry) -> None: ...


@dataclass(slots=True)
class ServerRegistry:
    timeout: float = DEFAULT_TIMEOUT
    grace: float = DEFAULT_GRACE
    _servers: dict[uuid.UUID, ServerEntry] = field(default_factory=dict)
    # Drained GUIDs outlive their entries: a drained edge that restarts stays drained.
    drained: set[uuid.UUID] = field(default_factory=set)
    observers: list[RegistryObserver] = field(default_factory=list)
    # The same entries as a list, for O(1) random picks (p2c); kept by swap-remove.
    _order: list[ServerEntry] = field(default_factory=list)
    _position: dict[uuid.UUID, int] = field(default_factory=dict)
    # The same entries, least recently reported first, so that ``expire`` looks only at
    # those that may have timed out (a report moves its entry to the end).
    _by_report: dict[ServerEntry, None] = field(default_factory=dict)
    _latest_report: float = float("-inf")
    _willing: int = 0  # entries RUNNING and not drained (``available_count`` starts there)
    _by_report_unordered: bool = False  # a report came with an earlier ``now`` (tests)

    def _add(self, entry: ServerEntry) -> None:
        self._servers[entry.guid] = entry
        self._position[entry.guid] = len(self._order)
        self._order.append(entry)
        self._by_report[entry] = None
        self._reported(entry.last_report)
        self._willing += entry.willing

    def _reported(self, now: float) -> None:
        if now < self._latest_report:
            self._by_report_unordered = True
        else:
            self._latest_report = now

    def _drop(self, entry: ServerEntry) -> None:
        del self._servers[entry.guid]
        del self._by_report[entry]
        self._willing -= entry.willing
        i = self._position.pop(entry.guid)
        last = self._order.pop()
        if last is not entry:
            self._order[i] = last
            self._position[last.guid] = i
        for observer in self.observers:
            observer.removed(entry)

    def _updated(self, entry: ServerEntry) -> None:
        for observer in self.observers:
            observer.updated(entry)

    def sample(self, rng: random.Random) -> ServerEntry | None:
        return self._order[rng.randrange(len(self._order))] if self._order else None

    def __len__(self) -> int:
        return len(self._servers)

    def __iter__(self) -> Iterator[ServerEntry]:
        return iter(list(self._servers.values()))

    def get(self, guid: uuid.UUID) -> ServerEntry | None:
        return self._servers.get(guid)

    def is_live(self, entry: ServerEntry, now: float) -> bool:
        return now - entry.last_report <= self.timeout

    def is_available(self, entry: ServerEntry, now: float) -> bool:
        """Would get a new client now: live, running, not drained."""
        return entry.running and not entry.drained and now - entry.last_report <= self.timeout

    def available(self, now: float) -> Iterator[ServerEntry]:
        """Edges that may take a new client now (live, running, not drained)."""
        for entry in self._servers.values():
            if self.is_available(entry, now):
                yield entry

    def apply(self, event: ReportAccepted, now: float) -> list[RegistryEvent]:
        report = event.report
        entry = self._servers.get(event.guid)
        if report.state is EdgeState.STOPPING:
            if entry is None:
                return []
            entry.report = report
            self._drop(entry)
            return [ServerLeft(entry, LeaveReason.STOPPED)]
        offset = 0.0 if event.received_at is None else event.sent_at - event.received_at
        if entry is None:
            entry = ServerEntry(guid=event.guid, boot_id=event.boot_id, report=report,
                                first_seen=now, last_report=now, sent_at=event.sent_at,
                                drained=event.guid in self.drained, clock_offset=offset)
            self._add(entry)
            self._updated(entry)
            return [ServerJoined(entry)]
        old_state = entry.state
        entry.boot_id = event.boot_id
        self._willing -= entry.willing
        entry.report = report
        entry.derive()
        self._willing += entry.willing
        entry.last_report = now
        del self._by_report[entry]
        self._by_report[entry] = None
        self._reported(now)
        entry.sent_at = event.sent_at
        entry.clock_offset = offset
        entry.reports_received += 1
        entry.redirects_since_report = 0
        # Redirects from before (send time - grace) are in this report's load now.
        transit = 0.0
        if event.received_at is not None:
            transit = min(MAX_TRANSIT, max(0.0, event.received_at - event.sent_at))
        sent = now - transit
        cutoff = sent - self.grace
        pending = entry.pending
        while pending and pending[0] <= cutoff:
            pending.popleft()
        grace = self.grace
        entry.pending_load = sum(1.0 if t >= sent else (t - cutoff) / grace for t in pending)
        self._updated(entry)
        if old_state is not report.state:
            return [ServerStateChanged(entry, old_state, report.state)]
        return []

    def expire(self, now: float) -> list[RegistryEvent]:
        if self._by_report_unordered:  # (only a caller whose clock went back: re-sorted)
            self._by_report = dict.fromkeys(sorted(self._by_report,
                                                   key=attrgetter("last_report")))
            self._by_report_unordered = False
        gone = []
        for entry in self._by_report:  # least recently reported first: stop at a live one
            if now - entry.last_report <= self.timeout:
                break
            gone.append(entry)
        for entry in gone:
            self._drop(entry)
        return [ServerLeft(entry, LeaveReason.TIMED_OUT) for entry in gone]

    def remove(self, guid: uuid.UUID) -> list[RegistryEvent]:
        entry = self._servers.get(guid)
        if entry is None:
            return []
        self._drop(entry)
        return [ServerLeft(entry, LeaveReason.REMOVED)]

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
        self._willing -= entry.willing
        entry.drained = drained
        self._willing += entry.willing
        self._updated(entry)
        return [ServerDrainChanged(entry, drained)]

    def count_redirect(self, entry: ServerEntry, now: float) -> None:
        entry.redirects_since_report += 1
        entry.redirects_total += 1
        entry.pending.append(now)
        entry.pending_load += 1.0
        for observer in self.observers:  # (_updated, inlined: this runs for every redirect)
            observer.updated(entry)

    def available_count(self, now: float) -> int:
        # O(timed out, not yet expired): every willing edge, less the willing ones whose
        # last report is past the timeout, which lead ``_by_report`` (the sweep expires
        # them within a quarter of a second). Read by management at every scrape.
        if self._by_report_unordered:
            return sum(1 for _ in self.available(now))
        count = self._willing
        for entry in self._by_report:
            if now - entry.last_report <= self.timeout:
                break
            count -= entry.willing
        return count
