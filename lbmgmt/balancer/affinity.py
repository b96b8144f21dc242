"""Stream affinity: a stream's new viewers go where it already flows, within a bounded load.

With pull edges every edge a stream's viewers land on opens its own pull from the
origin; least-load spreading sends one stream's viewers everywhere. This is
consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam,
"Consistent Hashing with Bounded Loads", SODA 2018; HAProxy's
``hash-balance-factor``), with the edges that already carry the stream first:

1. **Carriers.** The edges whose last report lists the stream (report extension
   ``streams``), and those this balancer sent one of its viewers lately (their pull
   is starting; for ``FRESH_INTERVALS`` of their report interval), that are available
   and under the **bound** (or under ``floor`` clients): the least loaded of them (of
   ``CARRIERS_LOOKED_AT`` picked at random, when more carry it: a choice costs the same
   for a stream every edge carries).
2. **The ring.** Otherwise the stream's key is placed on a ring of ``VNODES`` points
   per edge and the ring is walked clockwise to the first available edge under the
   bound: every balancer walks the same ring, so a stream's next edge is the same
   on all of them, and an edge leaving moves only its own streams. A stream no edge
   carries yet starts on an edge at most at the mean (``NEW_STREAM_FACTOR``), which
   leaves the fuller edges their room for the streams they carry.
3. **Least load.** Otherwise (no edge under the bound within ``MAX_WALK`` points):
   the redirector's own choice.

The bound: an edge takes the stream's viewer only while its effective load (reported
load plus clients sent since, as for every redirector: herd-free) plus this one is at
most ``balance_factor`` × the mean over the edges willing to take clients, the new
viewer included: ``load + 1 <= ceil(c · (total + 1) / n)`` (the paper's, and
HAProxy's). When every such edge reports a capacity, the mean is taken per unit of
capacity (``c · (total + 1) · capacity / Σ capacity``), so a bigger edge carries more.
A client routed to a group (``[routing]``) has its group's mean and its group's ring.
So no edge exceeds c × the mean because of affinity, and a stream spills to a second
edge only when its first is that full.

Several balancers side by side each count only their own redirects, and would each fill
a carrier up to the bound before its next report: ``peers`` (the other balancers)
counts every redirect since a report ``peers + 1`` times, as if each of them had sent
as many. The floor (``affinity_floor``, 8 clients) departs from
the paper for small fleets: the relative bound is tight while the fleet is nearly
empty (3 edges and 2 viewers: 1 each), which would spread a stream's first viewers
over every edge, a pull each; an edge under the floor takes more viewers of a stream
it carries whatever the mean (a few viewers overload no one). Measured in
``bench.affinity`` (docs/performance.md): 0 to 3 pulls fewer in 40 runs of 3 edges
and 4 streams, none at scale, where loads are far over the floor.

Sans-IO like the redirectors: it follows the registry as a ``RegistryObserver``
(O(1) per redirect; an edge joining or leaving moves its ring points in and out one by
one, never a rebuild), ``now`` is passed in, and what a choice costs and what is kept
are bounded whatever clients name: ``CARRIERS_LOOKED_AT`` carriers, ``MAX_WALK`` ring
points, ``MAX_RECENT`` streams remembered as sent, ``MAX_SENT_EDGES`` edges each.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Callable

from lbmgmt.balancer.registry import FRESH_INTERVALS, ServerEntry, ServerRegistry

DEFAULT_BALANCE_FACTOR = 1.25
MAX_BALANCE_FACTOR = 100.0
DEFAULT_FLOOR = 8
NEW_STREAM_FACTOR = 1.0
VNODES = 32  # ring points per edge
MAX_WALK = 128  # ring points looked at for one choice, at most
CARRIERS_LOOKED_AT = 8  # carriers weighed for one choice, at most (at random past it)
MAX_RECENT = 65_536  # streams remembered as sent lately (the least recent forgotten)
MAX_SENT_EDGES = 8  # edges remembered per stream as sent lately (the oldest forgotten)


def ring_points(entry: ServerEntry) -> list[int]:
    """The edge's ``VNODES`` points on the ring: from its GUID, so the same on every
    balancer and across its restarts."""
    guid = entry.guid.bytes
    return [int.from_bytes(hashlib.blake2b(guid + bytes((i,)), digest_size=8).digest(), "big")
            for i in range(VNODES)]


class Ring:
    """Points sorted, with their edges: consistent hashing's ring."""

    def __init__(self) -> None:
        self.points: list[int] = []
        self.owners: list[ServerEntry] = []

    def __len__(self) -> int:
        return len(self.points)

    def add(self, entry: ServerEntry, points: list[int]) -> None:
        for point in points:  # (O(ring) memory moves each: milliseconds at 10 000 edges)
            i = bisect.bisect_right(self.points, point)
            self.points.insert(i, point)
            self.owners.insert(i, entry)

    def remove(self, entry: ServerEntry, points: list[int]) -> None:
        ring, owners = self.points, self.owners
        for point in points:
            i = bisect.bisect_left(ring, point)
            while i < len(ring) and ring[i] == point and owners[i] is not entry:
                i += 1  # (another edge's equal point: 2**-64 odds)
            if i < len(ring) and owners[i] is entry:
                del ring[i]
                del owners[i]

    def walk(self, key: int, fits: Callable[[ServerEntry], bool]) -> ServerEntry | None:
        """The first edge clockwise from ``key`` that ``fits``, within ``MAX_WALK`` points."""
        ring, owners = self.points, self.owners
        size = len(ring)
        start = bisect.bisect_left(ring, key)
        seen: set[ServerEntry] = set()
        for step in range(min(MAX_WALK, size)):
            entry = owners[(start + step) % size]
            if entry not in seen:
                seen.add(entry)
                if fits(entry):
                    return entry
        return None


class Tally:
    """The mean's parts over the edges willing to take clients (a fleet's or a group's):
    reported loads and clients sent since apart (``peers`` scales the second), and
    capacities."""

    def __init__(self) -> None:
        self.members: dict[ServerEntry, tuple[float, float, float | None]] = {}
        self.reported = 0.0
        self.pending = 0.0
        self.capacity = 0.0
        self.without_capacity = 0

    def set(self, entry: ServerEntry, reported: float, pending: float,
            capacity: float | None) -> None:
        old = self.members.get(entry)
        if old is not None:
            if old[2] == capacity:  # (every redirect: the loads only)
                self.members[entry] = (reported, pending, capacity)
                self.reported += reported - old[0]
                self.pending += pending - old[1]
                return
            self.drop(entry)
        self.members[entry] = (reported, pending, capacity)
        self.reported += reported
        self.pending += pending
        if capacity is None:
            self.without_capacity += 1
        else:
            self.capacity += capacity

    def drop(self, entry: ServerEntry) -> None:
        old = self.members.pop(entry, None)
        if old is None:
            return
        if not self.members:  # (no float drift left behind)
            self.reported = self.pending = self.capacity = 0.0
            self.without_capacity = 0
            return
        self.reported -= old[0]
        self.pending -= old[1]
        if old[2] is None:
            self.without_capacity -= 1
        else:
            self.capacity -= old[2]


class Carriers:
    """The edges whose reports list one stream: add, remove and a random pick in O(1)."""

    __slots__ = ("edges", "where")

    def __init__(self) -> None:
        self.edges: list[ServerEntry] = []
        self.where: dict[ServerEntry, int] = {}

    def add(self, entry: ServerEntry) -> None:
        if entry not in self.where:
            self.where[entry] = len(self.edges)
            self.edges.append(entry)

    def remove(self, entry: ServerEntry) -> None:
        i = self.where.pop(entry, None)
        if i is None:
            return
        last = self.edges.pop()
        if last is not entry:
            self.edges[i] = last
            self.where[last] = i

    def some(self, rng: random.Random) -> list[ServerEntry]:
        """All of them, or ``CARRIERS_LOOKED_AT`` in a row from a random place (the
        order is the reports' and swap-removes': no edge is first for ever)."""
        edges = self.edges
        n = len(edges)
        if n <= CARRIERS_LOOKED_AT:
            return edges
        i = int(rng.random() * n)
        some = edges[i:i + CARRIERS_LOOKED_AT]
        return some + edges[:CARRIERS_LOOKED_AT - len(some)]


class StreamAffinity:
    """Which edge gets a viewer of a named stream, if affinity decides (see the module)."""

    def __init__(self, balance_factor: float = DEFAULT_BALANCE_FACTOR,
                 floor: int = DEFAULT_FLOOR, peers: int = 0,
                 rng: random.Random | None = None) -> None:
        self.balance_factor = DEFAULT_BALANCE_FACTOR
        self.set_balance_factor(balance_factor)
        if floor < 0 or peers < 0:
            raise ValueError("affinity_floor and peers must be 0 or more")
        self.floor = floor
        self.peers = peers
        self.rng = rng or random.Random()
        self.registry: ServerRegistry | None = None
        self.counters = {"carrier": 0, "ring": 0, "fallback": 0}
        self._reset()

    def set_balance_factor(self, value: float) -> None:
        """ValueError, and nothing changed, unless 1 < ``value`` <= MAX_BALANCE_FACTOR."""
        if not 1.0 < value <= MAX_BALANCE_FACTOR:
            raise ValueError(f"balance_factor must be more than 1 and at most "
                             f"{MAX_BALANCE_FACTOR:g}, not {value!r}")
        self.balance_factor = float(value)

    def _reset(self) -> None:
        # stream key -> the edges whose last report lists it
        self.carriers: dict[int, Carriers] = {}
        self._listed: dict[ServerEntry, frozenset[int]] = {}
        # stream key -> edge -> until when (monotonic) it counts as a carrier: sent lately
        self.recent: OrderedDict[int, dict[ServerEntry, float]] = OrderedDict()
        # per group (None: the whole pool): the ring of its edges, the mean's parts
        self.rings: dict[str | None, Ring] = {}
        self.tallies: dict[str | None, Tally] = {None: Tally()}
        self._group_of: dict[ServerEntry, str | None] = {}
        self._points_of: dict[ServerEntry, list[int]] = {}

    # -- following the registry -----------------------------------------------------
    def attach(self, registry: ServerRegistry) -> None:
        self.detach()
        self.registry = registry
        registry.follow(self)

    def detach(self) -> None:
        if self.registry is not None:
            self.registry.unfollow(self)
        self.registry = None
        self._reset()

    def updated(self, entry: ServerEntry) -> None:
        """A report, a redirect, a drain: O(1), unless its stream list or group changed
        or it is new (its ring points go in)."""
        report = entry.report
        group = report.group
        if entry not in self._group_of:
            self._join(entry, group)
        elif self._group_of[entry] != group:
            self._leave_group(entry)
            self._join(entry, group)
        tallies = self.tallies
        if entry.willing:
            tallies[None].set(entry, report.load, entry.pending_load, report.capacity)
            if group is not None:
                tallies[group].set(entry, report.load, entry.pending_load, report.capacity)
        else:
            tallies[None].drop(entry)
            if group is not None:
                tallies[group].drop(entry)
        streams = entry.streams
        if self._listed.get(entry) is not streams:
            self._relist(entry, streams)

    def _join(self, entry: ServerEntry, group: str | None) -> None:
        points = self._points_of.get(entry)
        if points is None:
            points = self._points_of[entry] = ring_points(entry)
            self.rings.setdefault(None, Ring()).add(entry, points)
        self._group_of[entry] = group
        if group is not None:
            self.rings.setdefault(group, Ring()).add(entry, points)
            self.tallies.setdefault(group, Tally())

    def _leave_group(self, entry: ServerEntry) -> None:
        group = self._group_of.pop(entry, None)
        if group is None:
            return
        ring, tally = self.rings[group], self.tallies[group]
        ring.remove(entry, self._points_of[entry])
        tally.drop(entry)
        if not len(ring):  # its last edge: a group name is not kept for ever
            del self.rings[group], self.tallies[group]

    def removed(self, entry: ServerEntry) -> None:
        if entry not in self._group_of:
            return
        self._leave_group(entry)
        self._group_of.pop(entry, None)
        self.tallies[None].drop(entry)
        self._relist(entry, frozenset())
        self._listed.pop(entry, None)
        self.rings[None].remove(entry, self._points_of.pop(entry))

    def _relist(self, entry: ServerEntry, streams: frozenset[int]) -> None:
        old = self._listed.get(entry, frozenset())
        carriers = self.carriers
        for key in old - streams:
            edges = carriers.get(key)
            if edges is not None:
                edges.remove(entry)
                if not edges.edges:
                    del carriers[key]
        for key in streams - old:
            edges = carriers.get(key)
            if edges is None:
                edges = carriers[key] = Carriers()
            edges.add(entry)
        self._listed[entry] = streams

    # -- choosing -------------------------------------------------------------------
    def choose(self, servers: ServerRegistry, now: float, stream: int, group: str | None,
               usable: Callable[[ServerEntry], bool] | None) -> ServerEntry | None:
        """The edge for a viewer of ``stream`` (a key) among ``group``'s (None: any), or
        None for the redirector's own choice."""
        tally = self.tallies.get(group)
        if tally is None or not tally.members:
            return None
        members = tally.members  # the group's edges present and willing: checked here
        live_now = servers.liveness_now(now)
        scale = self.peers + 1.0  # each redirect since a report, as every balancer's
        total = tally.reported + scale * tally.pending + 1.0
        # the bound, ceil(factor * share): per unit of capacity when every edge has one
        per_capacity = (total / tally.capacity
                        if tally.without_capacity == 0 and tally.capacity > 0 else None)
        per_edge = total / len(members)

        def fits(entry: ServerEntry, factor: float, floor: float = 0.0) -> bool:
            if entry not in members:
                return False
            age = live_now - entry.live_stamp  # (is_available and is_fresh, inlined)
            if (age > entry.fresh_for or age > entry.leave_after or entry.suspect_until > now
                    or entry.over_bandwidth or (usable is not None and not usable(entry))):
                return False
            report = entry.report
            if report.load + entry.pending_load + 1.0 > entry.max_clients:
                return False
            load = report.load + scale * entry.pending_load + 1.0
            if load <= floor:
                return True
            capacity = report.capacity
            share = (per_edge if per_capacity is None or capacity is None
                     else per_capacity * capacity)
            return load <= math.ceil(factor * share)

        factor, floor = self.balance_factor, float(self.floor)
        best: ServerEntry | None = None
        best_load = 0.0
        carried = self.carriers.get(stream)
        sent = self.recent.get(stream)
        if sent:
            self._expire(stream, sent, now)
        listed = carried.where if carried is not None else {}
        for edges in (carried.some(self.rng) if carried is not None else None, sent):
            if edges:
                for entry in edges:
                    if (edges is sent and entry in listed) or not fits(entry, factor, floor):
                        continue  # (one listed and sent lately was weighed once)
                    load = entry.report.load + entry.pending_load
                    if best is None or load < best_load:
                        best, best_load = entry, load
        if best is not None:
            self.counters["carrier"] += 1
            return best
        ring = self.rings.get(group)
        if ring is not None:
            if carried or sent:  # every carrier is full: it spills to its next edge
                best = ring.walk(stream, lambda e: fits(e, factor))
            else:  # a stream starts where the load is at most the mean
                best = ring.walk(stream, lambda e: fits(e, NEW_STREAM_FACTOR))
        self.counters["ring" if best is not None else "fallback"] += 1
        return best

    def _expire(self, stream: int, sent: dict[ServerEntry, float], now: float) -> None:
        for entry in [e for e, until in sent.items() if until < now]:
            del sent[entry]
        if not sent:
            del self.recent[stream]

    def sent(self, stream: int, entry: ServerEntry, now: float) -> None:
        """This balancer sent a viewer of ``stream`` to ``entry``: a carrier from now on,
        until its reports have had time to say so."""
        recent = self.recent
        edges = recent.get(stream)
        if edges is None:
            edges = recent[stream] = {}
            if len(recent) > MAX_RECENT:
                recent.popitem(last=False)
        else:
            recent.move_to_end(stream)
        edges.pop(entry, None)  # (the latest last: the oldest go first)
        edges[entry] = now + FRESH_INTERVALS * entry.interval
        if len(edges) > MAX_SENT_EDGES:
            del edges[next(iter(edges))]
