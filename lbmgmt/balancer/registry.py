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
DEFAULT_MISSED_REPORTS = 4
DEFAULT_MAX_SILENCE = 60.0
LEAVE_SLACK = 0.5  # of an interval, after the last missed report: late, not lost
REJOIN_WINDOW = 300.0  # seconds a timed-out edge's entry is kept for its return
MAX_DEPARTED = 10_000  # timed-out entries kept at most (the oldest go first)
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
    payload: bytes = field(default=b"", repr=False)  # the last report as it came (state file)
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
    leave_after: float = field(init=False, default=DEFAULT_TIMEOUT)
    """How long the edge may be silent before it leaves (``ServerRegistry.leave_after``)."""
    live_stamp: float = field(init=False, default=0.0)
    """``last_report`` on the registry's liveness clock (``ServerRegistry.liveness_now``),
    which stands still while the balancer cannot hear its edges: silence counts from it."""
    departed_at: float | None = field(init=False, default=None)
    """When it timed out, while its entry waits for its return; None while present."""
    over_bandwidth: bool = field(init=False, default=False)
    """Its last report says it sends at or over its bandwidth limit: no new client."""
    max_clients: float = field(init=False, default=float("inf"))
    """The most clients it takes (``report.max_clients``; inf if it says none): at it,
    counting the clients sent since its report, no redirector sends it another."""
    streams: frozenset[int] = field(init=False, default=frozenset())
    """The keys of the streams it carries, as its last report says (a new object only
    when they change)."""
    suspect_until: float = field(init=False, default=float("-inf"))
    """Until then (monotonic) no new client goes to it: the proxy could not reach it
    (``ServerRegistry.suspect``). Its reports still count; only choices avoid it."""

    def __post_init__(self) -> None:
        self.derive()

    def derive(self) -> None:
        report = self.report
        # (draining to stop is never running, whatever state a sender put beside it)
        self.running = report.state is EdgeState.RUNNING and report.draining is None
        self.fresh_for = FRESH_INTERVALS * report.interval_ms / 1000
        limit = report.bandwidth_limit
        self.over_bandwidth = (limit is not None and report.bandwidth is not None
                               and report.bandwidth >= limit)
        self.max_clients = (float("inf") if report.max_clients is None
                            else float(report.max_clients))
        streams = report.streams or ()
        if len(streams) != len(self.streams) or not self.streams.issuperset(streams):
            self.streams = frozenset(streams)

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
    def state_name(self) -> str:
        """Its state as the status pages say it: DRAINING while it drains to stop."""
        report = self.report
        return "DRAINING" if report.draining is not None else report.state.name

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

    def seconds_since_report(self, now: float) -> float:
        return max(0.0, now - self.last_report)


@dataclass(frozen=True, slots=True)
class ServerJoined:
    server: ServerEntry
    absent_for: float | None = None  # seconds, when a timed-out edge came back
    restored: bool = False  # from the state file, at start


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


@dataclass(frozen=True, slots=True)
class ServerCannotStay:
    """The edge's interval is not shorter than the time it may be silent: it flaps."""

    server: ServerEntry
    interval: float
    leave_after: float


RegistryEvent = (ServerJoined | ServerLeft | ServerStateChanged | ServerDrainChanged
                 | ServerCannotStay)


class RegistryObserver(Protocol):
    """What a redirector's index needs to hear to stay in step without scanning."""

    def updated(self, entry: ServerEntry) -> None: ...

    def removed(self, entry: ServerEntry) -> None: ...


class ServerRegistry:
    """The pool, keyed by GUID.

    Liveness comes from each edge's own interval: an edge leaves after it missed
    ``missed_reports`` reports in a row by its interval (and half an interval of
    slack), never sooner than ``timeout`` (the seed's ``message_timeout_ms``, the
    floor) and never later than ``max_silence``. With independent losses of a
    fraction p of reports, an edge is wrongly absent about p**missed_reports of the
    time (4 misses: 0.01 % at 10 % loss, 0.8 % at 30 %). A timed-out edge that
    reports again within ``REJOIN_WINDOW`` gets its old entry back (its counts and
    first-seen time), not a new one.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, grace: float = DEFAULT_GRACE, *,
                 missed_reports: int = DEFAULT_MISSED_REPORTS,
                 max_silence: float = DEFAULT_MAX_SILENCE) -> None:
        self._timeout = timeout
        self.grace = grace
        self._missed_reports = missed_reports
        self._max_silence = max_silence
        self._servers: dict[uuid.UUID, ServerEntry] = {}
        # Drained GUIDs outlive their entries: a drained edge that restarts stays drained.
        self.drained: set[uuid.UUID] = set()
        self.observers: list[RegistryObserver] = []
        # The same entries as a list, for O(1) random picks (p2c); kept by swap-remove.
        self._order: list[ServerEntry] = []
        self._position: dict[uuid.UUID, int] = {}
        # The same entries by how long they may be silent (most fleets: one value), each
        # group least recently reported first, so that ``expire`` looks only at those that
        # may have timed out (a report moves its entry to the end of its group).
        self._by_leave: dict[float, dict[ServerEntry, None]] = {}
        self._latest_report = float("-inf")
        self._willing = 0  # entries RUNNING and not drained (``available_count`` starts there)
        self._by_report_unordered = False  # a report came with an earlier ``now`` (tests)
        # Timed-out entries, oldest first, kept for their return (``REJOIN_WINDOW``).
        self._departed: dict[uuid.UUID, ServerEntry] = {}
        self.forgotten = 0  # departed entries let go, in all
        # The liveness clock: the monotonic clock less the time the balancer could not hear
        # its edges (an overloaded report port, ``freeze``): no edge leaves for that time.
        self.excused = 0.0
        self.frozen_at: float | None = None  # the liveness clock, stopped; None: running
        self._frozen_since = 0.0  # monotonic, when it stopped

    # -- liveness settings: changing one re-files every entry ---------------------------
    @property
    def timeout(self) -> float:
        """The least time an edge may be silent before it leaves (the floor)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self._timeout = value
        self._refile()

    @property
    def missed_reports(self) -> int:
        return self._missed_reports

    @missed_reports.setter
    def missed_reports(self, value: int) -> None:
        self._missed_reports = value
        self._refile()

    @property
    def max_silence(self) -> float:
        return self._max_silence

    @max_silence.setter
    def max_silence(self, value: float) -> None:
        self._max_silence = value
        self._refile()

    # -- the liveness clock ---------------------------------------------------------
    def liveness_now(self, now: float) -> float:
        """``now`` (monotonic) on the liveness clock, which silence is measured on."""
        frozen = self.frozen_at
        return now - self.excused if frozen is None else frozen

    def freeze(self, now: float) -> None:
        """The balancer cannot tell who is silent (its report port is overloaded): from
        ``now`` no silence counts, so no edge leaves or drops out of choice for it."""
        if self.frozen_at is None:
            self.frozen_at = now - self.excused
            self._frozen_since = now

    def thaw(self, now: float) -> None:
        """Silence counts again from ``now``; the frozen stretch is excused for good."""
        if self.frozen_at is not None:
            self.excused += now - self._frozen_since
            self.frozen_at = None

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None

    def leave_after(self, interval: float) -> float:
        """How long an edge reporting every ``interval`` seconds may be silent."""
        by_interval = (self._missed_reports + LEAVE_SLACK) * interval
        return max(self._timeout, min(self._max_silence, by_interval))

    def _refile(self) -> None:
        entries = sorted(self._servers.values(), key=attrgetter("live_stamp"))
        self._by_leave = {}
        for entry in entries:
            entry.leave_after = self.leave_after(entry.interval)
            self._file(entry)
        self._by_report_unordered = False

    def _file(self, entry: ServerEntry) -> None:
        group = self._by_leave.get(entry.leave_after)
        if group is None:
            group = self._by_leave[entry.leave_after] = {}
        group[entry] = None

    def _unfile(self, entry: ServerEntry) -> None:
        group = self._by_leave[entry.leave_after]
        del group[entry]
        if not group:
            del self._by_leave[entry.leave_after]

    def _add(self, entry: ServerEntry) -> None:
        self._servers[entry.guid] = entry
        self._position[entry.guid] = len(self._order)
        self._order.append(entry)
        entry.leave_after = self.leave_after(entry.interval)
        self._file(entry)
        self._reported(entry.live_stamp)
        self._willing += entry.willing

    def _reported(self, now: float) -> None:
        if now < self._latest_report:
            self._by_report_unordered = True
        else:
            self._latest_report = now

    def _drop(self, entry: ServerEntry) -> None:
        del self._servers[entry.guid]
        self._unfile(entry)
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

    def follow(self, observer: RegistryObserver) -> None:
        """``observer`` hears of every change from now on, and of every entry now."""
        self.observers.append(observer)
        for entry in self:
            observer.updated(entry)

    def unfollow(self, observer: RegistryObserver) -> None:
        if observer in self.observers:
            self.observers.remove(observer)

    def sample(self, rng: random.Random) -> ServerEntry | None:
        return self._order[rng.randrange(len(self._order))] if self._order else None

    def __len__(self) -> int:
        return len(self._servers)

    def __iter__(self) -> Iterator[ServerEntry]:
        return iter(list(self._servers.values()))

    def get(self, guid: uuid.UUID) -> ServerEntry | None:
        return self._servers.get(guid)

    def is_live(self, entry: ServerEntry, now: float) -> bool:
        return self.liveness_now(now) - entry.live_stamp <= entry.leave_after

    def is_available(self, entry: ServerEntry, now: float) -> bool:
        """Would get a new client now: live, running, not drained, not suspect, under its
        bandwidth limit and its max_clients."""
        return (entry.running and not entry.drained and entry.suspect_until <= now
                and not entry.over_bandwidth
                and entry.report.load + entry.pending_load < entry.max_clients
                and self.liveness_now(now) - entry.live_stamp <= entry.leave_after)

    def suspect(self, entry: ServerEntry, until: float) -> None:
        """No new client for ``entry`` until ``until`` (it could not be reached); the
        redirectors take it back with its first report after that."""
        entry.suspect_until = max(entry.suspect_until, until)

    def is_fresh(self, entry: ServerEntry, now: float) -> bool:
        """Its last report is within ``FRESH_INTERVALS`` of its interval (liveness clock)."""
        return self.liveness_now(now) - entry.live_stamp <= entry.fresh_for

    def available(self, now: float) -> Iterator[ServerEntry]:
        """Edges that may take a new client now (live, running, not drained)."""
        for entry in self._servers.values():
            if self.is_available(entry, now):
                yield entry

    def apply(self, event: ReportAccepted, now: float) -> list[RegistryEvent]:
        report = event.report
        entry = self._servers.get(event.guid)
        if report.state is EdgeState.STOPPING:
            self._departed.pop(event.guid, None)  # stopped on purpose: not coming back
            if entry is None:
                return []
            entry.report = report
            self._drop(entry)
            return [ServerLeft(entry, LeaveReason.STOPPED)]
        offset = 0.0 if event.received_at is None else event.sent_at - event.received_at
        if entry is None:
            entry = self._departed.pop(event.guid, None)
            if entry is not None and entry.departed_at is not None:  # back: its old entry
                absent_for = now - entry.departed_at
                entry.departed_at = None
                entry.boot_id, entry.report, entry.last_report = event.boot_id, report, now
                entry.live_stamp = self.liveness_now(now)
                entry.payload = event.payload
                entry.sent_at, entry.clock_offset = event.sent_at, offset
                entry.reports_received += 1
                entry.redirects_since_report = 0
                entry.pending.clear()
                entry.pending_load = 0.0
                entry.drained = event.guid in self.drained
                entry.derive()
                self._add(entry)
                self._updated(entry)
                return [ServerJoined(entry, absent_for=absent_for)]
            entry = ServerEntry(guid=event.guid, boot_id=event.boot_id, report=report,
                                first_seen=now, last_report=now, sent_at=event.sent_at,
                                drained=event.guid in self.drained, clock_offset=offset,
                                payload=event.payload)
            entry.live_stamp = self.liveness_now(now)
            self._add(entry)
            self._updated(entry)
            return [ServerJoined(entry)]
        old_state = entry.state
        entry.payload = event.payload
        old_interval = entry.report.interval_ms
        entry.boot_id = event.boot_id
        self._willing -= entry.willing
        entry.report = report
        entry.derive()
        self._willing += entry.willing
        entry.last_report = now
        entry.live_stamp = live = self.liveness_now(now)
        self._unfile(entry)
        if report.interval_ms != old_interval:
            entry.leave_after = self.leave_after(entry.interval)
        self._file(entry)
        self._reported(live)
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

    def _timed_out(self, now: float) -> list[ServerEntry]:
        """Present entries silent past their ``leave_after``: O(those), not O(pool)."""
        if self._by_report_unordered:  # (only a caller whose clock went back: re-sorted)
            self._refile()
        live_now = self.liveness_now(now)
        gone = []
        for leave_after, group in self._by_leave.items():
            for entry in group:  # least recently reported first: stop at a live one
                if live_now - entry.live_stamp <= leave_after:
                    break
                gone.append(entry)
        return gone

    def expire(self, now: float) -> list[RegistryEvent]:
        """Edges silent past their time leave (kept aside for their return); entries
        kept longer than ``REJOIN_WINDOW`` are forgotten."""
        gone = self._timed_out(now)
        departed = self._departed
        for entry in gone:
            self._drop(entry)
            entry.departed_at = now
            departed[entry.guid] = entry
        forget: list[uuid.UUID] = []
        for guid, entry in departed.items():  # oldest first: stop at one kept
            if (len(departed) - len(forget) <= MAX_DEPARTED
                    and now - (entry.departed_at or now) <= REJOIN_WINDOW):
                break
            forget.append(guid)
        for guid in forget:
            del departed[guid]
        self.forgotten += len(forget)
        return [ServerLeft(entry, LeaveReason.TIMED_OUT) for entry in gone]

    @property
    def departed_count(self) -> int:
        """Timed-out edges whose entries wait for their return."""
        return len(self._departed)

    def restore(self, entry: ServerEntry) -> list[RegistryEvent]:
        """Take back an entry kept across a restart (its ``last_report`` on this process's
        clock), unless the edge was heard since or it is past its time by ``now``."""
        if entry.guid in self._servers:
            return []
        entry.drained = entry.guid in self.drained
        entry.live_stamp = self.liveness_now(entry.last_report)
        self._add(entry)
        self._updated(entry)
        return [ServerJoined(entry, restored=True)]

    def remove(self, guid: uuid.UUID) -> list[RegistryEvent]:
        self._departed.pop(guid, None)
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
        # O(timed out, not yet expired): every willing edge, less the willing ones past
        # their time, which lead their groups (the sweep expires them within a quarter
        # of a second). Read by management at every scrape.
        if self._by_report_unordered:
            return sum(1 for _ in self.available(now))
        return self._willing - sum(entry.willing for entry in self._timed_out(now))
