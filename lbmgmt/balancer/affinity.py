"""Stream affinity: a stream's new viewers go where it already flows, within a bounded load.

With pull edges every edge a stream's viewers land on opens its own pull from the
origin; least-load spreading sends one stream's viewers everywhere. This is
consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam,
"Consistent Hashing with Bounded Loads", SODA 2018; HAProxy's
``hash-balance-factor``), with the edges that already carry the stream first:

1. **Carriers.** The edges whose last report lists the stream (report extension
   ``streams``), and those this balancer sent one of its viewers lately (their pull
   is starting; for ``FRESH_INTERVALS`` of their report interval), that are available
   and under the **bound** (or under ``floor`` clients): the least loaded of them.
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
capacity
(``c · (total + 1) · capacity / Σ capacity``), so a bigger edge carries more. So no edge
exceeds c × the mean because of affinity, and a stream spills to a second edge only
when its first is that full. The floor (``affinity_floor``, 8 clients) departs from
the paper for small fleets: the relative bound is tight while the fleet is nearly
empty (3 edges and 2 viewers: 1 each), which would spread a stream's first viewers
over every edge, a pull each; an edge under the floor takes more viewers of a stream
it carries whatever the mean (a few viewers overload no one). Measured in
``bench.affinity`` (docs/performance.md): 0 to 3 pulls fewer in 40 runs of 3 edges
and 4 streams, none at scale, where loads are far over the floor.

Sans-IO like the redirectors: it follows the registry as a ``RegistryObserver``,
``now`` is passed in, and its memory is bounded (``MAX_RECENT`` streams remembered
as sent, the ring rebuilt on membership changes, at most once a second when large).
"""

from __future__ import annotations

import bisect
import math
import hashlib
from collections import OrderedDict
from collections.abc import Callable

from lbmgmt.balancer.registry import FRESH_INTERVALS, ServerEntry, ServerRegistry

DEFAULT_BALANCE_FACTOR = 1.25
MAX_BALANCE_FACTOR = 100.0
DEFAULT_FLOOR = 8
NEW_STREAM_FACTOR = 1.0
VNODES = 32  # ring points per edge
MAX_WALK = 128  # ring points looked at for one choice, at most
MAX_RECENT = 65_536  # streams remembered as sent lately (the least recent forgotten)
BIG_RING = 8192  # points past which the ring is rebuilt at most once a second
RING_REBUILD_EVERY = 1.0


def ring_points(entry: ServerEntry) -> list[int]:
    """The edge's ``VNODES`` points on the ring: from its GUID, so the same on every
    balancer and across its restarts."""
    guid = entry.guid.bytes
    return [int.from_bytes(hashlib.blake2b(guid + bytes((i,)), digest_size=8).digest(), "big")
            for i in range(VNODES)]


class StreamAffinity:
    """Which edge gets a viewer of a named stream, if affinity decides (see the module)."""

    def __init__(self, balance_factor: float = DEFAULT_BALANCE_FACTOR,
                 floor: int = DEFAULT_FLOOR) -> None:
        if not 1.0 < balance_factor <= MAX_BALANCE_FACTOR:
            raise ValueError(f"balance_factor must be more than 1 and at most "
                             f"{MAX_BALANCE_FACTOR:g}, not {balance_factor!r}")
        if floor < 0:
            raise ValueError("affinity_floor must be 0 or more")
        self.balance_factor = balance_factor
        self.floor = floor
        self.registry: ServerRegistry | None = None
        self.counters = {"carrier": 0, "ring": 0, "fallback": 0}
        self._reset()

    def _reset(self) -> None:
        # stream key -> edges whose last report lists it (insertion-ordered set)
        self.carriers: dict[int, dict[ServerEntry, None]] = {}
        self._listed: dict[ServerEntry, frozenset[int]] = {}
        # stream key -> edge -> until when (monotonic) it counts as a carrier: sent lately
        self.recent: OrderedDict[int, dict[ServerEntry, float]] = OrderedDict()
        # The mean: effective loads and capacities of the edges willing to take clients.
        self._load: dict[ServerEntry, float] = {}
        self._capacity: dict[ServerEntry, float | None] = {}
        self.total_load = 0.0
        self.total_capacity = 0.0
        self._without_capacity = 0
        # The ring: sorted points and their owners, rebuilt when membership changed.
        self._points_of: dict[ServerEntry, list[int]] = {}
        self._ring: list[int] = []
        self._owners: list[ServerEntry] = []
        self._ring_dirty = False
        self._ring_built = float("-inf")

    # -- following the registry -----------------------------------------------------
    def attach(self, registry: ServerRegistry) -> None:
        self.detach()
        self.registry = registry
        registry.observers.append(self)
        for entry in registry:
            self.updated(entry)

    def detach(self) -> None:
        if self.registry is not None and self in self.registry.observers:
            self.registry.observers.remove(self)
        self.registry = None
        self._reset()

    def updated(self, entry: ServerEntry) -> None:
        """A report, a redirect, a drain: O(1) unless its stream list changed."""
        if entry.willing:
            load = entry.report.load + entry.pending_load
            old = self._load.get(entry)
            self._load[entry] = load
            self.total_load += load - (old or 0.0)
            capacity = entry.report.capacity
            if old is None or self._capacity.get(entry) != capacity:
                self._uncount_capacity(entry)
                self._capacity[entry] = capacity
                if capacity is None:
                    self._without_capacity += 1
                else:
                    self.total_capacity += capacity
        elif entry in self._load:
            self.total_load -= self._load.pop(entry)
            self._uncount_capacity(entry)
        streams = entry.streams
        if self._listed.get(entry) is not streams:
            self._relist(entry, streams)
        if entry not in self._points_of:
            self._points_of[entry] = ring_points(entry)
            self._ring_dirty = True

    def removed(self, entry: ServerEntry) -> None:
        if entry in self._load:
            self.total_load -= self._load.pop(entry)
            self._uncount_capacity(entry)
        self._relist(entry, frozenset())
        self._listed.pop(entry, None)
        if self._points_of.pop(entry, None) is not None:
            self._ring_dirty = True

    def _uncount_capacity(self, entry: ServerEntry) -> None:
        if entry not in self._capacity:
            return
        capacity = self._capacity.pop(entry)
        if capacity is None:
            self._without_capacity -= 1
        else:
            self.total_capacity -= capacity
        if not self._capacity:  # (no drift from float sums left behind)
            self.total_capacity, self.total_load = 0.0, 0.0

    def _relist(self, entry: ServerEntry, streams: frozenset[int]) -> None:
        old = self._listed.get(entry, frozenset())
        carriers = self.carriers
        for key in old - streams:
            edges = carriers.get(key)
            if edges is not None:
                edges.pop(entry, None)
                if not edges:
                    del carriers[key]
        for key in streams - old:
            carriers.setdefault(key, {})[entry] = None
        self._listed[entry] = streams

    # -- choosing -------------------------------------------------------------------
    def choose(self, servers: ServerRegistry, now: float, stream: int, group: str | None,
               usable: Callable[[ServerEntry], bool] | None) -> ServerEntry | None:
        """The edge for a viewer of ``stream`` (a key) among ``group``'s (None: any), or
        None for the redirector's own choice."""
        loads = self._load  # the edges present and willing: membership checked here
        willing = len(loads)
        if not willing:
            return None
        live_now = servers.liveness_now(now)
        total = self.total_load + 1.0
        # the bound, ceil(factor * share): per unit of capacity when every edge has one
        per_capacity = (total / self.total_capacity
                        if self._without_capacity == 0 and self.total_capacity > 0 else None)
        per_edge = total / willing

        def fits(entry: ServerEntry, factor: float, floor: float = 0.0) -> bool:
            report = entry.report
            if entry not in loads or (group is not None and report.group != group):
                return False
            age = live_now - entry.live_stamp  # (is_available and is_fresh, inlined)
            if (age > entry.fresh_for or age > entry.leave_after or entry.suspect_until > now
                    or entry.over_bandwidth or (usable is not None and not usable(entry))):
                return False
            load = report.load + entry.pending_load + 1.0
            if load > entry.max_clients or load <= floor:
                return load <= floor and load <= entry.max_clients
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
        for edges in (carried, sent):
            if edges:
                for entry in edges:
                    if fits(entry, factor, floor):
                        load = entry.report.load + entry.pending_load
                        if best is None or load < best_load:
                            best, best_load = entry, load
        if best is not None:
            self.counters["carrier"] += 1
            return best
        if carried or sent:  # every carrier is full: it spills to its next edge on the ring
            best = self._walk(stream, now, lambda e: fits(e, factor))
        else:  # a stream starts where the load is at most the mean
            best = self._walk(stream, now, lambda e: fits(e, NEW_STREAM_FACTOR))
        self.counters["ring" if best is not None else "fallback"] += 1
        return best

    def _expire(self, stream: int, sent: dict[ServerEntry, float], now: float) -> None:
        for entry in [e for e, until in sent.items() if until < now]:
            del sent[entry]
        if not sent:
            del self.recent[stream]

    def _walk(self, stream: int, now: float,
              fits: Callable[[ServerEntry], bool]) -> ServerEntry | None:
        if self._ring_dirty and (len(self._ring) < BIG_RING
                                 or now - self._ring_built >= RING_REBUILD_EVERY):
            self._rebuild(now)
        ring, owners = self._ring, self._owners
        if not ring:
            return None
        start = bisect.bisect_left(ring, stream)
        seen: set[ServerEntry] = set()
        size = len(ring)
        for step in range(min(MAX_WALK, size)):
            entry = owners[(start + step) % size]
            if entry in seen:
                continue
            seen.add(entry)
            if fits(entry):
                return entry
        return None

    def _rebuild(self, now: float) -> None:
        pairs = sorted((point, i) for i, points in enumerate(self._points_of.values())
                       for point in points)
        entries = list(self._points_of)
        self._ring = [point for point, _ in pairs]
        self._owners = [entries[i] for _, i in pairs]
        self._ring_dirty = False
        self._ring_built = now

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
        edges[entry] = now + FRESH_INTERVALS * entry.interval
