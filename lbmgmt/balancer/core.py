"""BalancerCore: every decision the balancer makes, sans-IO.

Datagrams and times in, events and choices out: the core owns the report
receiver (authentication, replay and freshness checks), the registry of edges,
the redirector that picks an edge for each new client, the counters, and the
fan-out of registry events. It never reads a clock or touches a socket: the
caller passes ``now`` (monotonic seconds, for timeouts) and ``wall`` (the wall
clock, for report timestamps). The daemon (daemon.py) is the shell that feeds
it; the fronts (HTTP, RTMP) and the management view (mbeans.py) depend on the
core alone.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lbmgmt.balancer.affinity import DEFAULT_BALANCE_FACTOR, DEFAULT_FLOOR, StreamAffinity
from lbmgmt.balancer.routing import Routing, RoutingConfig
from lbmgmt.balancer.redirectors import Redirector, redirector_class
from lbmgmt.balancer.report_gate import ReportGate
from lbmgmt.balancer.registry import (DEFAULT_MAX_SILENCE, DEFAULT_MISSED_REPORTS,
                                      RegistryEvent, ServerCannotStay, ServerEntry,
                                      ServerJoined, ServerLeft, ServerRegistry,
                                      ServerStateChanged)
from lbmgmt.endpoints import join_host_port
from lbmgmt.logs import fields
from lbmgmt.streams import stream_key
from lbmgmt.status import (DatagramDropped, DropReason, ReportAccepted, ReportReceiver,
                           SharedKey)
from lbmgmt.throttle import Throttle

log = logging.getLogger("lbmgmt.balancer")

# What a client is told when no edge would take it, in every protocol's own wrapping.
NO_SERVER = "no available server"
WARN_INTERVAL = 60.0  # seconds between two warnings of one cause (a sender's key or clock)
BAD_AUTH_HOSTS_SAID = 10  # hosts whose wrong key is said per WARN_INTERVAL, at most
CLOCK_CHECK_INTERVAL = 10.0  # seconds between two looks at whether our own clock is off
# The report port is overloaded when the kernel dropped datagrams since the last sweep, or
# datagrams that fail to open (after the gate: crypto spent on them) come faster than this
# a second; then no edge leaves the pool, until it has been quiet for OVERLOAD_HOLD
# seconds, or for MAX_FREEZE at most in one overload (past that, an edge that died during
# it must go: silence counts again until the overload has ended once).
OVERLOAD_BAD_RATE = 1000.0
OVERLOAD_HOLD = 2.0
MAX_FREEZE = 120.0


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """One edge as the status pages (serverInfoXML, listServers) show it."""

    guid: uuid.UUID
    address: str
    state: str
    available: bool
    drained: bool
    load: float
    capacity: float | None
    redirects_since_report: int
    seconds_since_report: float
    interval: float  # seconds between its reports, as it says
    reports_received: int
    agent: str | None  # the edge's software, if its reports say
    unhealthy: str | None  # why it takes no clients, if its reports say (then PAUSED)
    clock_offset: float  # its clock less ours at its last report, seconds
    last_drop: str | None  # why the last of its reports dropped lately was, if any
    suspect_for: float = 0.0  # seconds it still gets no client: a front could not reach it
    group: str | None = None
    private_address: str | None = None
    bandwidth: float | None = None  # bits/s out, as it reports
    bandwidth_limit: float | None = None
    max_clients: int | None = None
    streams: int = 0  # streams it carries, as its reports say
    redirects_total: int = 0  # clients sent to it by this balancer, in all


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """The whole pool at one instant: what every status page renders."""

    redirector: str
    servers: list[ServerStatus]  # by address
    available_count: int
    accepted: int
    drops: dict[str, int]

    @property
    def server_count(self) -> int:
        return len(self.servers)


@dataclass(slots=True)
class FrontStats:
    """One client-facing protocol's counters, and how many connections it holds now."""

    counters: Counter[str]
    active: Callable[[], int] = field(default=lambda: 0)

    def snapshot(self) -> dict[str, int]:
        return {**self.counters, "active": self.active()}


@dataclass(slots=True)
class OverloadStats:
    """The report port's overloads: how often, how long, what the kernel dropped."""

    episodes: int = 0
    seconds: float = 0.0
    kernel_drops: int = 0  # datagrams the kernel dropped (receive buffer full)


@dataclass(slots=True)
class DroppedSender:
    """A sender whose reports were dropped lately, and why: what an operator looks up
    when an edge never appears (its GUID is only claimed when the key is wrong)."""

    guid: uuid.UUID | None
    source: str
    reason: str
    detail: str
    offset: float | None  # its clock less ours, seconds (stale)
    count: int
    first: float  # monotonic
    last: float


class DroppedSenders:
    """The senders dropped lately, one row per sender (GUID, else source host) and reason,
    the most recent ``MAX_ROWS`` (bounded whatever floods)."""

    MAX_ROWS = 1024
    RECENT = 60.0  # seconds: only senders heard within this count for the clock check

    def __init__(self) -> None:
        self._rows: OrderedDict[tuple[object, str], DroppedSender] = OrderedDict()
        self._latest: dict[uuid.UUID, DroppedSender] = {}  # each GUID's latest row

    def heard(self, drop: DatagramDropped, source: tuple[str, int], now: float) -> None:
        # (a wrong key's GUID is only claimed: one row per host, whatever it claims)
        guid, detail = drop.guid, drop.detail
        if drop.reason is DropReason.BAD_AUTH:
            guid, detail = None, f"{detail} (claims GUID {drop.guid})"
        key = (source[0] if guid is None else guid, str(drop.reason))
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = DroppedSender(
                guid, join_host_port(*source), str(drop.reason), detail, drop.offset, 0,
                now, now)
            if len(self._rows) > self.MAX_ROWS:
                _, evicted = self._rows.popitem(last=False)
                if evicted.guid is not None and self._latest.get(evicted.guid) is evicted:
                    del self._latest[evicted.guid]
        else:
            self._rows.move_to_end(key)
            row.source, row.detail, row.offset, row.last = (
                join_host_port(*source), detail, drop.offset, now)
        row.count += 1
        if guid is not None:
            self._latest[guid] = row

    def rows(self) -> list[DroppedSender]:
        """Most recent first."""
        return list(reversed(self._rows.values()))

    def last_for(self, guid: uuid.UUID) -> DroppedSender | None:
        """The latest drop of this GUID's reports, if any is kept."""
        return self._latest.get(guid)

    def stale_offsets(self, now: float) -> dict[uuid.UUID, float]:
        """Each sender whose reports were dropped as stale lately: its clock less ours."""
        return {r.guid: r.offset for r in self._rows.values()
                if r.reason == DropReason.STALE and r.guid is not None
                and r.offset is not None and now - r.last <= self.RECENT}


MIN_EDGES_TO_OUTVOTE = 3  # fewer edges cannot say our clock is off


def agreed_offset(offsets: list[float], *, limit: float) -> float | None:
    """The median of ``offsets`` if at least ``MIN_EDGES_TO_OUTVOTE`` and more than half
    of them ``limit`` or more off the same way; else None."""
    if len(offsets) < MIN_EDGES_TO_OUTVOTE:
        return None
    offsets = sorted(offsets)
    median = offsets[len(offsets) // 2]
    same_way = sum(1 for o in offsets if abs(o) >= limit and (o > 0) == (median > 0))
    return median if same_way * 2 > len(offsets) else None


class BalancerCore:
    def __init__(self, key: SharedKey, *, timeout: float, grace: float, max_clock_skew: float,
                 redirector: str = "concurrent-connects",
                 missed_reports: int = DEFAULT_MISSED_REPORTS,
                 max_silence: float = DEFAULT_MAX_SILENCE,
                 routing: Routing | None = None, affinity: bool = False,
                 balance_factor: float = DEFAULT_BALANCE_FACTOR,
                 affinity_floor: int = DEFAULT_FLOOR, peers: int = 0) -> None:
        self.registry = ServerRegistry(timeout=timeout, grace=grace,
                                       missed_reports=missed_reports, max_silence=max_silence)
        self.receiver = ReportReceiver(key, max_age=max_clock_skew)
        self.redirector_spec = redirector
        self.configured_redirector = redirector  # the one a config file named (may be a plug-in)
        self.redirector: Redirector = redirector_class(redirector)()
        self.redirector.attach(self.registry)
        # Viewers of a named stream where it flows: on for the stream-affinity redirector,
        # or for any with the ``affinity`` option (then it follows the registry too).
        self.affinity_option = affinity
        self.stream_affinity = StreamAffinity(balance_factor, affinity_floor, peers)
        self._affinity_on = False
        self._follow_streams()
        self.redirects_served: Counter[str] = Counter()
        self.routing = routing or Routing(RoutingConfig())
        # where clients went by the group of their edge ("" for edges with none), and
        # how many were routed by a rule (their groups' edges) or fell back to any edge
        self.group_redirects: Counter[str] = Counter()
        self.routed = Counter({"in_group": 0, "fallback": 0})
        self.fronts: dict[str, FrontStats] = {}
        # What the shell bound, for the status pages ("udp", "http", "rtmp"): text or absent.
        self.addresses: dict[str, str] = {}
        self.listeners: list[Callable[[RegistryEvent], None]] = []
        self.warnings = Throttle(WARN_INTERVAL)  # rejected reports an operator must hear of
        self._bad_auth_said: deque[float] = deque()
        self._bad_auth_unsaid = 0
        self.dropped_senders = DroppedSenders()
        self._next_clock_check = float("-inf")
        # Grows with every change of what a state file keeps (reports taken, edges
        # joining, leaving, drained): the daemon saves only when it moved.
        self.revision = 0
        self.gate = ReportGate()
        self._pruned = 0  # senders whose replay state was let go
        self.overload = OverloadStats()
        self._bad_since_sweep = 0
        self._last_sweep: float | None = None
        self._kernel_drops: int | None = None
        self._overloaded_until = float("-inf")
        self._frozen_since: float | None = None
        self._freeze_spent = False  # this overload froze for MAX_FREEZE: no more

    # -- reports in -------------------------------------------------------------------
    def receive_datagram(self, data: bytes, *, now: float, wall: float,
                         source: tuple[str, int] = ("?", 0)) -> None:
        """One datagram from the status port (``source``: the sender's address): applied
        if it is a good report, else counted, and said if an operator must act (a wrong
        key, a skewed clock). A source that is flooding gets no crypto work at all."""
        receiver = self.receiver
        if not self.gate.admit(source, now) and not receiver.knows(data):
            # (no genuine report was lost for it: not a sign of overload by itself)
            receiver.drops[DropReason.THROTTLED] += 1
            return
        event = receiver.receive(data, wall)
        if isinstance(event, ReportAccepted):
            self.gate.good(source, now)
            self.revision += 1
            self._emit(self.registry.apply(event, now))
            entry = self.registry.get(event.guid)
            if entry is not None and entry.interval >= entry.leave_after:
                self._cannot_stay(entry, source, now)
        else:
            if event.guid is not None:  # it cost crypto: charged to its source
                self.dropped_senders.heard(event, source, now)
                self.gate.bad(source, now)
                self._bad_since_sweep += 1
            if event.reason is DropReason.BAD_AUTH or event.reason is DropReason.STALE:
                self._say_why(event, source, now)

    def _cannot_stay(self, entry: ServerEntry, source: tuple[str, int], now: float) -> None:
        """An edge whose reports come no more often than it may be silent (its interval
        is past max_silence_ms) leaves the pool before each next one: it flaps, and
        nothing else would say why. Said once a minute: a warning and an event."""
        held_back = self.warnings.allow(("interval", entry.guid), now)
        if held_back is not None:
            log.warning("an edge reports less often than an edge may be silent: it leaves "
                        "the pool between reports (shorten its interval, or raise "
                        "max_silence_ms)", extra=fields(
                            guid=str(entry.guid), source=join_host_port(*source),
                            interval_ms=entry.report.interval_ms,
                            leave_after_ms=round(entry.leave_after * 1000),
                            held_back=held_back))
            self._emit([ServerCannotStay(entry, entry.interval, entry.leave_after)])

    def _say_why(self, drop: DatagramDropped, address: tuple[str, int], now: float) -> None:
        """A rejected report that will come again until someone acts: a warning, at most
        one per ``WARN_INTERVAL`` per sender (``held_back``: how many since the last)."""
        host, source = address[0], join_host_port(*address)
        if drop.reason is DropReason.BAD_AUTH:
            held_back = self.warnings.allow((drop.reason, host), now)
            if held_back is None:
                return
            said = self._bad_auth_said  # many hosts at once (a flood): a few a minute
            while said and now - said[0] > WARN_INTERVAL:
                said.popleft()
            if len(said) >= BAD_AUTH_HOSTS_SAID:
                self._bad_auth_unsaid += 1
                return
            said.append(now)
            log.warning("report dropped: it does not open with this balancer's key "
                        "(a wrong key in the edge's targets file?)", extra=fields(
                            source=source, claimed_guid=str(drop.guid),
                            held_back=held_back, other_hosts_unsaid=self._bad_auth_unsaid))
            self._bad_auth_unsaid = 0
            return
        held_back = self.warnings.allow((drop.reason, drop.guid), now)
        if held_back is not None:
            offset_ms = round((drop.offset or 0.0) * 1000)
            log.warning("report dropped: the edge's clock and this balancer's differ by more "
                        "than max_clock_skew_ms (run NTP or chrony on both)", extra=fields(
                            guid=str(drop.guid), source=source, offset_ms=offset_ms,
                            max_ms=round(self.receiver.max_age * 1000), held_back=held_back))

    @property
    def sweep_interval(self) -> float:
        """How often ``handle_timer`` should run: a tenth of the timeout, at most 0.25 s."""
        return min(0.25, self.registry.timeout / 10)

    def handle_timer(self, *, now: float, wall: float, kernel_drops: int | None = None) -> None:
        """Expire silent edges and forget stale replay state; say if our clock is off.

        ``kernel_drops``: how many datagrams the kernel has dropped on the report socket
        so far (its receive buffer full), if the shell can tell. While the report port is
        overloaded (those grow, or bad datagrams come fast) no edge leaves the pool: the
        balancer cannot tell a silent edge from one whose reports it lost (fail static).
        """
        self._check_overload(now, kernel_drops)
        self._emit(self.registry.expire(now))
        self._pruned += self.receiver.prune(wall)
        self.gate.prune(now)
        self._check_own_clock(now)

    @property
    def forgotten(self) -> int:
        """Senders whose state was let go, in all (replay state, departed entries)."""
        return self._pruned + self.registry.forgotten

    def _check_overload(self, now: float, kernel_drops: int | None) -> None:
        last, self._last_sweep = self._last_sweep, now
        bad, self._bad_since_sweep = self._bad_since_sweep, 0
        lost = 0
        if kernel_drops is not None:
            if self._kernel_drops is not None and kernel_drops > self._kernel_drops:
                lost = kernel_drops - self._kernel_drops
            self._kernel_drops = kernel_drops
        stats = self.overload
        stats.kernel_drops += lost
        rate = bad / (now - last) if last is not None and now > last else 0.0
        if lost or rate > OVERLOAD_BAD_RATE:
            if now >= self._overloaded_until:  # it starts
                stats.episodes += 1
                held_back = self.warnings.allow("overload", now)
                if held_back is not None:
                    log.warning("report port overloaded: no edge leaves the pool until it is "
                                "over (the balancer cannot tell a silent edge from a lost "
                                "report)", extra=fields(
                                    kernel_drops=lost, bad_per_s=round(rate),
                                    throttled=self.receiver.drops[DropReason.THROTTLED],
                                    held_back=held_back))
            self._overloaded_until = now + OVERLOAD_HOLD
        registry = self.registry
        if now < self._overloaded_until:
            if registry.frozen:
                if last is not None:
                    stats.seconds += now - last
                if self._frozen_since is not None and now - self._frozen_since >= MAX_FREEZE:
                    registry.thaw(now)
                    self._freeze_spent = True
                    log.warning("report port overloaded for longer than an edge may be "
                                "kept: silence counts again (edges that died meanwhile "
                                "leave)", extra=fields(max_freeze_s=MAX_FREEZE))
            elif not self._freeze_spent:
                registry.freeze(now)
                self._frozen_since = now
        else:
            self._freeze_spent = False
            if registry.frozen:
                registry.thaw(now)
                log.info("report port no longer overloaded: silence counts again",
                         extra=fields(kernel_drops=stats.kernel_drops))

    def _check_own_clock(self, now: float) -> None:
        """Most edges' clocks agree with each other and not with ours: ours is off."""
        if now < self._next_clock_check:
            return
        self._next_clock_check = now + CLOCK_CHECK_INTERVAL
        # the edges heard recently: the taken ones' offsets from the registry (no work per
        # report), then the dropped ones' (a later word on the same edge)
        offsets = {e.guid: e.clock_offset for e in self.registry
                   if now - e.last_report <= DroppedSenders.RECENT}
        offsets.update(self.dropped_senders.stale_offsets(now))
        offset = agreed_offset(list(offsets.values()), limit=self.receiver.max_age / 2)
        if offset is not None and self.warnings.allow("own clock", now) is not None:
            log.warning("this balancer's clock differs from most edges' (run NTP or chrony): "
                        "their reports are dropped as stale past max_clock_skew_ms",
                        extra=fields(edges_ahead_by_ms=round(offset * 1000),
                                     edges=len(offsets),
                                     max_ms=round(self.receiver.max_age * 1000)))

    # -- clients out ------------------------------------------------------------------
    @property
    def wants_streams(self) -> bool:
        """Whether a client's stream name matters to the choice (fronts look it up only
        then: on the plain path it costs nothing)."""
        return self._affinity_on

    def _follow_streams(self) -> None:
        on = self.affinity_option or self.redirector.affinity
        if on and not self._affinity_on:
            self.stream_affinity.attach(self.registry)
        elif not on and self._affinity_on:
            self.stream_affinity.detach()
        self._affinity_on = on

    def set_affinity(self, on: bool, balance_factor: float | None = None) -> None:
        """The ``affinity`` option and ``balance_factor``, live (ValueError for a factor
        not over 1)."""
        if balance_factor is not None:  # (raises before anything changes)
            self.stream_affinity.set_balance_factor(balance_factor)
        self.affinity_option = on
        self._follow_streams()

    def redirect(self, protocol: str, now: float, client: str | None = None,
                 stream: str | None = None) -> ServerEntry | None:
        """The edge for one new client, counted against that edge and ``protocol``;
        ``client`` (its address) picks the groups to try first (``[routing]``);
        ``stream`` (its name, ``lbmgmt.streams``), where it already flows, if affinity
        is on."""
        routing = self.routing
        groups = routing.groups(client) if client is not None and routing.active else ()
        redirector = self.redirector
        if stream is not None and self._affinity_on:
            key = stream_key(stream)
            registry, affinity, usable = self.registry, self.stream_affinity, redirector.usable

            def first(group: str | None) -> ServerEntry | None:
                return affinity.choose(registry, now, key, group, usable)

            entry = redirector.redirect(registry, now, groups, first)
            if entry is not None:
                affinity.sent(key, entry, now)
        else:
            entry = redirector.redirect(self.registry, now, groups)
        if entry is not None:
            self.redirects_served[protocol] += 1
            group = entry.report.group
            if groups or group is not None:
                self.group_redirects[group or ""] += 1
                if groups:
                    self.routed["in_group" if group in groups else "fallback"] += 1
        return entry

    def group_status(self, now: float) -> dict[str, dict[str, int]]:
        """Per group (edges with none under ""): edges, available ones, clients sent."""
        out: dict[str, dict[str, int]] = {}
        registry = self.registry
        for entry in registry:
            row = out.setdefault(entry.report.group or "", {"edges": 0, "available": 0,
                                                            "redirects": 0})
            row["edges"] += 1
            row["available"] += registry.is_available(entry, now)
        for group, count in self.group_redirects.items():
            out.setdefault(group, {"edges": 0, "available": 0, "redirects": 0})[
                "redirects"] = count
        return out

    def address_for(self, entry: ServerEntry, client: str | None = None) -> str:
        """Where to send ``client``: the edge's private address for a client in the
        fleet's own networks, else its redirect address (through ``[routing] addresses``)."""
        routing = self.routing
        if not routing.rewrites:
            return entry.report.address
        return routing.address(entry, client is not None and routing.private(client))

    def front(self, protocol: str, counters: Iterable[str],
              active: Callable[[], int] = lambda: 0) -> Counter[str]:
        """Register a front's counters (all starting at 0) for the status pages."""
        stats = FrontStats(Counter(dict.fromkeys(counters, 0)), active)
        self.fronts[protocol] = stats
        self.redirects_served.setdefault(protocol, 0)
        return stats.counters

    def unreachable(self, entry: ServerEntry, now: float, *, suspect_for: float,
                    protocol: str, error: str) -> None:
        """A front could not reach ``entry``: no new client goes to it for ``suspect_for``
        seconds (then its reports decide again); said at warning, once a minute per edge."""
        self.registry.suspect(entry, now + suspect_for)
        held_back = self.warnings.allow(("unreachable", entry.guid), now)
        if held_back is not None:
            log.warning("edge unreachable: no new clients for it for a while", extra=fields(
                edge=entry.address, guid=str(entry.guid), protocol=protocol, error=error,
                suspect_s=suspect_for, more=held_back))

    # -- operator actions -------------------------------------------------------------
    def drain(self, guid: uuid.UUID, drained: bool = True) -> None:
        """Balancer-side drain; KeyError for an unknown GUID."""
        self._emit(self.registry.set_drained(guid, drained))

    def remove(self, guid: uuid.UUID) -> None:
        events = self.registry.remove(guid)
        if not events:
            raise KeyError(f"no server {guid}")
        self._emit(events)

    def set_redirector(self, spec: str) -> None:
        """Switch strategy live; the new one builds its index from the registry.

        Raises PluginError for an unknown name or a class that cannot be loaded.
        """
        new = redirector_class(spec)()
        new.attach(self.registry)
        self.redirector.detach()
        self.redirector = new
        self.redirector_spec = spec
        self._follow_streams()

    def headroom(self, now: float) -> dict[str, float]:
        """For autoscalers: clients the available edges can still take (each edge's
        capacity, or its max_clients, less its effective load; none below 0), and how
        many available edges report neither (their room is unknown, not counted)."""
        registry = self.registry
        room, unknown, edges = 0.0, 0, 0
        for entry in registry:
            if not registry.is_available(entry, now):
                continue
            edges += 1
            limit = entry.report.capacity
            if entry.report.max_clients is not None:
                limit = min(limit or entry.max_clients, entry.max_clients)
            if limit is None:
                unknown += 1
            else:
                room += max(0.0, limit - entry.effective_load)
        return {"clients": room, "edges": edges, "unknown_edges": unknown}

    # -- status -----------------------------------------------------------------------
    def status(self, now: float) -> PoolStatus:
        registry = self.registry
        dropped = self.dropped_senders.last_for
        rows = [ServerStatus(
            guid=e.guid, address=e.address, state=e.state_name,
            available=registry.is_available(e, now), drained=e.drained, load=e.load,
            capacity=e.capacity, redirects_since_report=e.redirects_since_report,
            seconds_since_report=e.seconds_since_report(now), interval=e.interval,
            reports_received=e.reports_received, agent=e.report.agent,
            unhealthy=e.report.unhealthy, clock_offset=e.clock_offset,
            last_drop=None if (d := dropped(e.guid)) is None else d.reason,
            suspect_for=max(0.0, e.suspect_until - now), group=e.report.group,
            private_address=e.report.private_address, bandwidth=e.report.bandwidth,
            bandwidth_limit=e.report.bandwidth_limit, max_clients=e.report.max_clients,
            streams=len(e.streams), redirects_total=e.redirects_total)
            for e in sorted(registry, key=lambda e: e.address)]
        return PoolStatus(redirector=self.redirector.name, servers=rows,
                          available_count=sum(r.available for r in rows),
                          accepted=self.receiver.accepted,
                          drops={str(r): c for r, c in self.receiver.drops.items()})

    # -- events -----------------------------------------------------------------------
    def emit(self, events: list[RegistryEvent]) -> None:
        """Say registry events made outside a report (a warm start's restored pool)."""
        self._emit(events)

    def _emit(self, events: list[RegistryEvent]) -> None:
        if events:
            self.revision += 1
        for event in events:
            if isinstance(event, ServerJoined):
                if event.restored:
                    log.debug("server restored", extra=fields(guid=str(event.server.guid),
                                                              address=event.server.address))
                elif event.absent_for is None:
                    log.info("server joined", extra=fields(guid=str(event.server.guid),
                                                           address=event.server.address))
                else:
                    log.info("server rejoined", extra=fields(
                        guid=str(event.server.guid), address=event.server.address,
                        absent_ms=round(event.absent_for * 1000)))
            elif isinstance(event, ServerLeft):
                log.info("server left", extra=fields(guid=str(event.server.guid),
                                                     reason=str(event.reason)))
            elif isinstance(event, ServerStateChanged):
                log.info("server state", extra=fields(guid=str(event.server.guid),
                                                      state=event.new.name,
                                                      unhealthy=event.server.report.unhealthy))
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("registry listener failed")
