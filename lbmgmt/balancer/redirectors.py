"""Redirectors: which available edge gets the next client.

Chosen by short name or ``module:Class`` in the balancer config, and switched
live through the management API. Every redirect is counted on the chosen edge
(``ServerRegistry.count_redirect``), so choices see the clients already sent
and not only the last report (see registry.py on the grace window).

Choice costs O(1): least-load redirectors keep their edges grouped by load
(``_LoadIndex``), regrouped through ``RegistryObserver`` hooks when a report
or a redirect changes one edge, never searched. Edges whose last report is
older than three of their intervals (but still inside the timeout) are set
aside and chosen only when no fresher edge is available.
"""

from __future__ import annotations

import abc
import heapq
import random
from collections.abc import Callable
from typing import ClassVar

from lbmgmt.balancer.registry import ServerEntry, ServerRegistry
from lbmgmt.plugins import resolve_plugin

P2C_TRIES = 8  # random picks before p2c falls back to its least-load index
MAX_KEY = 1e12  # a key past it is indexed as it: the group number stays a small int


class Redirector(abc.ABC):
    name: ClassVar[str]
    # Viewers of a named stream go where it flows (lbmgmt.balancer.affinity), whatever
    # the balancer's ``affinity`` option says: the stream-affinity redirector.
    affinity: ClassVar[bool] = False

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.registry: ServerRegistry | None = None
        # A further test an edge must pass to get a client (a weighted edge with room):
        # what other choosers (stream affinity) must respect too. None: none.
        self.usable: Callable[[ServerEntry], bool] | None = None

    def attach(self, registry: ServerRegistry) -> None:
        """Start following ``registry`` (and stop following the one before, if any)."""
        self.detach()
        self.registry = registry
        registry.follow(self)

    def detach(self) -> None:
        if self.registry is not None:
            self.registry.unfollow(self)
        self.registry = None

    # RegistryObserver: redirectors without an index ignore changes.
    def updated(self, entry: ServerEntry) -> None:
        return None

    def removed(self, entry: ServerEntry) -> None:
        return None

    @abc.abstractmethod
    def choose(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        """The edge for the next client, or None; ``redirect`` attaches to ``servers`` first."""

    def choose_in(self, servers: ServerRegistry, now: float, group: str) -> ServerEntry | None:
        """The edge for the next client among ``group``'s, or None.

        This default walks the pool (O(edges)) for the least effective load; the
        least-load redirectors keep an index per group instead."""
        best: ServerEntry | None = None
        for entry in servers:
            if (entry.report.group == group and servers.is_available(entry, now)
                    and (best is None or entry.effective_load < best.effective_load)):
                best = entry
        return best

    def redirect(self, servers: ServerRegistry, now: float, groups: tuple[str, ...] = (),
                 first: Callable[[str | None], ServerEntry | None] | None = None
                 ) -> ServerEntry | None:
        """The next client's edge: from the first of ``groups`` that has one available,
        else from the whole pool; counted against it. ``first(group)`` (group None: the
        whole pool), if given, is asked before this redirector in each."""
        if self.registry is not servers:
            self.attach(servers)
        entry = None
        for group in groups:
            entry = first(group) if first is not None else None
            if entry is None:
                entry = self.choose_in(servers, now, group)
            if entry is not None:
                break
        else:
            entry = first(None) if first is not None else None
            if entry is None:
                entry = self.choose(servers, now)
        if entry is not None:
            servers.count_redirect(entry, now)
        return entry


class _LoadIndex:
    """Edges grouped by ``floor(key * resolution)``, lowest group first: O(1) per change.

    A heap over every edge costs a sift through log n levels of scattered
    memory at every redirect (measured: a quarter of the request rate at 10 000
    edges); groups change in O(1) (a swap-remove and an append), and the heap
    left is over the few group numbers in use. Within the lowest group an edge
    is picked at random: least load to within 1/resolution, ties spread evenly.
    Edges that cannot take clients leave the index until their next change;
    stale ones wait aside and are chosen only when no fresh edge can be.
    """

    def __init__(self, rng: random.Random, resolution: float = 1.0) -> None:
        self.rng = rng
        self.resolution = resolution
        self.groups: dict[int, list[ServerEntry]] = {}
        self.group_heap: list[int] = []  # group numbers, lazily cleaned of empty ones
        # Keyed by the entry itself (identity hash, in C): a UUID key would call
        # UUID.__hash__ and __eq__ in Python several times per redirect.
        self.where: dict[ServerEntry, tuple[int, int]] = {}  # entry -> (group, position)
        self.key: dict[ServerEntry, float] = {}
        self.stale: dict[ServerEntry, None] = {}

    def __len__(self) -> int:
        return len(self.where)

    def _take_out(self, entry: ServerEntry) -> None:
        spot = self.where.pop(entry, None)
        if spot is None:
            return
        group, i = spot
        members = self.groups[group]
        last = members.pop()
        if i < len(members):
            members[i] = last
            self.where[last] = (group, i)

    def push(self, entry: ServerEntry, key: float) -> None:
        """(Re)index ``entry`` under ``key`` (on every redirect: ``_take_out`` inlined)."""
        if not key < MAX_KEY:  # (an edge's absurd figures, inf or NaN: last, not a crash)
            key = MAX_KEY
        where, groups = self.where, self.groups
        spot = where.get(entry)
        if spot is not None:
            members = groups[spot[0]]
            last = members.pop()
            i = spot[1]
            if i < len(members):
                members[i] = last
                where[last] = spot
        elif self.stale:
            self.stale.pop(entry, None)
        self.key[entry] = key
        group = int(key * self.resolution // 1)
        into = groups.get(group)
        if into is None:
            into = groups[group] = []
        if not into:
            heapq.heappush(self.group_heap, group)
        where[entry] = (group, len(into))
        into.append(entry)

    def forget(self, entry: ServerEntry) -> None:
        self._take_out(entry)
        self.stale.pop(entry, None)
        self.key.pop(entry, None)

    def best(self, servers: ServerRegistry, now: float,
             usable: Callable[[ServerEntry], bool] | None = None) -> ServerEntry | None:
        heap, groups, random = self.group_heap, self.groups, self.rng.random
        live_now = servers.liveness_now(now)
        while heap:
            group = heap[0]
            members = groups.get(group)
            if not members:
                heapq.heappop(heap)
                if members is not None and not members:
                    del groups[group]
                continue
            entry = members[int(random() * len(members))]  # random() is C, fast
            # (ServerRegistry.is_available and is_fresh, inlined: hot)
            age = live_now - entry.live_stamp
            if (not entry.running or entry.drained or age > entry.leave_after
                    or entry.suspect_until > now or entry.over_bandwidth
                    or entry.report.load + entry.pending_load >= entry.max_clients
                    or (usable is not None and not usable(entry))):
                self._take_out(entry)  # back in with its next report or undrain
                continue
            if age > entry.fresh_for:
                self._take_out(entry)
                self.stale[entry] = None
                continue
            return entry
        # nothing fresh: the least loaded of the stale ones that can take a client
        best: ServerEntry | None = None
        for entry in list(self.stale):
            if not servers.is_available(entry, now) or (usable is not None
                                                         and not usable(entry)):
                del self.stale[entry]
            elif best is None or self.key[entry] < self.key[best]:
                best = entry
        return best


class ConcurrentConnects(Redirector):
    """Least effective load: reported load + redirects it does not include yet.

    Edges within one client of the least loaded are picked at random, so
    after a round of equal reports any of them may come first, and equal
    edges then take turns as their counts grow.
    """

    name = "concurrent-connects"

    resolution: ClassVar[float] = 1.0  # least load to within one client

    def __init__(self, *, rng: random.Random | None = None) -> None:
        super().__init__(rng=rng)
        self.index = _LoadIndex(self.rng, self.resolution)
        # edges that report a group, indexed again by it (none: no cost per redirect)
        self.groups: dict[str, _LoadIndex] = {}
        self.group_of: dict[ServerEntry, str] = {}

    def key(self, entry: ServerEntry) -> float:
        return entry.effective_load

    def updated(self, entry: ServerEntry) -> None:
        # on every redirect: effective_load without a call (a subclass's key is called)
        key = (entry.report.load + entry.pending_load
               if type(self).key is ConcurrentConnects.key else self.key(entry))
        self.index.push(entry, key)
        if self.group_of or entry.report.group is not None:
            self._regroup(entry, key)

    def _regroup(self, entry: ServerEntry, key: float) -> None:
        group, old = entry.report.group, self.group_of.get(entry)
        if old is not None and old != group:
            previous = self.groups[old]
            previous.forget(entry)
            del self.group_of[entry]
            if not previous.key:  # its last edge: a group name is not kept for ever
                del self.groups[old]
        if group is not None:
            self.group_of[entry] = group
            index = self.groups.get(group)
            if index is None:
                index = self.groups[group] = _LoadIndex(self.rng, self.resolution)
            index.push(entry, key)

    def removed(self, entry: ServerEntry) -> None:
        self.index.forget(entry)
        group = self.group_of.pop(entry, None)
        if group is not None:
            index = self.groups[group]
            index.forget(entry)
            if not index.key:
                del self.groups[group]

    def choose(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        return self.index.best(servers, now, self.usable)

    def choose_in(self, servers: ServerRegistry, now: float, group: str) -> ServerEntry | None:
        index = self.groups.get(group)
        return None if index is None else index.best(servers, now, self.usable)


class StreamAffinityRedirector(ConcurrentConnects):
    """Least effective load, but a named stream's viewers go where it already flows,
    within a bounded load (``lbmgmt.balancer.affinity``): as concurrent-connects with
    the balancer's ``affinity`` option on."""

    name = "stream-affinity"
    affinity = True


class Weighted(ConcurrentConnects):
    """Effective load ÷ capacity, for edges that report a capacity; a full edge gets nothing.

    Edges without a capacity are chosen, by effective load, only when no edge
    with a capacity has room left.
    """

    name = "weighted"
    resolution = 1000.0  # load/capacity to within 0.1 %
    NO_CAPACITY = 1e6  # ranks every edge without a capacity after every edge with room

    def key(self, entry: ServerEntry) -> float:
        if entry.capacity is None:
            return self.NO_CAPACITY + entry.effective_load
        return entry.effective_load / entry.capacity

    def __init__(self, *, rng: random.Random | None = None) -> None:
        super().__init__(rng=rng)
        self.usable = _has_room


class Bandwidth(ConcurrentConnects):
    """Outbound bandwidth ÷ the edge's limit, for edges that report both: the headroom is
    what is balanced, and an edge at its limit gets nothing (as from every redirector).

    Clients sent since the edge's report are counted at its bandwidth per client (at
    least ``CLIENT_BPS``), so a burst spreads rather than herding onto the emptiest edge.
    Edges without a limit come after every edge with room.
    """

    name = "bandwidth"
    resolution = 1000.0  # to within 0.1 % of the limit
    NO_LIMIT = 1e6
    # A client sent since the edge's report counts as its measured bandwidth per client,
    # but never less than one viewer of a 720p stream: an edge that reports clients and
    # (yet) no bandwidth would otherwise take every client sent until its next report.
    CLIENT_BPS = 2_500_000.0

    def key(self, entry: ServerEntry) -> float:
        report = entry.report
        limit, sent = report.bandwidth_limit, report.bandwidth or 0.0
        per_client = (max(sent / report.load, self.CLIENT_BPS) if report.load >= 1
                      else self.CLIENT_BPS)
        used = sent + entry.pending_load * per_client
        if limit is None:
            return self.NO_LIMIT + used / self.CLIENT_BPS
        return used / limit

    def __init__(self, *, rng: random.Random | None = None) -> None:
        super().__init__(rng=rng)
        self.usable = self._has_headroom

    def _has_headroom(self, entry: ServerEntry) -> bool:
        return entry.report.bandwidth_limit is None or self.key(entry) < 1.0


def _has_room(entry: ServerEntry) -> bool:
    """A full edge gets nothing."""
    return entry.capacity is None or entry.effective_load < entry.capacity


class PowerOfTwoChoices(ConcurrentConnects):
    """Two random available edges, the less loaded of the two (Mitzenmacher).

    Where several balancers each count only their own redirects, least-loaded
    on all of them sends every balancer's next client to the same edge; two
    random choices spread them while keeping most of the benefit. O(1): a few
    random picks, then the least-load index if the pool is mostly unavailable.
    """

    name = "p2c"

    def choose(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        picks: list[ServerEntry] = []
        for _ in range(P2C_TRIES):
            entry = servers.sample(self.rng)
            if entry is None:
                return None
            if (servers.is_available(entry, now) and servers.is_fresh(entry, now)
                    and all(p is not entry for p in picks)):
                picks.append(entry)
                if len(picks) == 2:
                    break
        if len(picks) < 2 and len(servers) > 1:
            # few usable edges among many: the index finds the best one properly
            return picks[0] if picks and len(servers) < 3 else self.index.best(servers, now)
        if not picks:
            return self.index.best(servers, now)
        return min(picks, key=lambda e: (e.effective_load, self.rng.random()))


class RoundRobin(Redirector):
    """Each available edge in turn, whatever its load (fresh edges before stale ones)."""

    name = "round-robin"

    def __init__(self, *, rng: random.Random | None = None) -> None:
        super().__init__(rng=rng)
        self._next = 0

    def choose(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        return self._turn(servers, now, None)

    def choose_in(self, servers: ServerRegistry, now: float, group: str) -> ServerEntry | None:
        return self._turn(servers, now, group)

    def _turn(self, servers: ServerRegistry, now: float,
              group: str | None) -> ServerEntry | None:
        """The next available edge in the rotation (of ``group``'s, unless None)."""
        order = servers._order
        stale: ServerEntry | None = None
        for _ in range(len(order)):
            self._next %= len(order)
            entry = order[self._next]
            self._next += 1
            if ((group is None or entry.report.group == group)
                    and servers.is_available(entry, now)):
                if servers.is_fresh(entry, now):
                    return entry
                stale = stale or entry
        return stale


BUILTIN_REDIRECTORS: dict[str, type[Redirector]] = {
    ConcurrentConnects.name: ConcurrentConnects,
    Weighted.name: Weighted,
    PowerOfTwoChoices.name: PowerOfTwoChoices,
    RoundRobin.name: RoundRobin,
    Bandwidth.name: Bandwidth,
    StreamAffinityRedirector.name: StreamAffinityRedirector,
}


def redirector_class(spec: str) -> type[Redirector]:
    return resolve_plugin("redirector", spec, BUILTIN_REDIRECTORS, Redirector)
