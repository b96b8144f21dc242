"""Redirectors: which available edge gets the next client.

Chosen by short name or ``module:Class`` in the balancer config, and switched
live through the management API. Every redirect is counted on the chosen edge
(``ServerRegistry.count_redirect``), so choices see the clients already sent
and not only the last report (see registry.py on the grace window).

Choice costs O(log n): least-load redirectors keep a heap of the edges keyed
by their load, updated through ``RegistryObserver`` hooks when a report or a
redirect changes one edge, and invalidated lazily instead of searched. Edges
whose last report is older than three of their intervals (but still inside
the timeout) are set aside and chosen only when no fresher edge is available.
"""

from __future__ import annotations

import abc
import heapq
import random
import uuid
from collections.abc import Callable
from typing import ClassVar

from lbmgmt.balancer.registry import ServerEntry, ServerRegistry
from lbmgmt.plugins import resolve_plugin

P2C_TRIES = 8  # random picks before p2c falls back to its least-load index


class Redirector(abc.ABC):
    name: ClassVar[str]

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.registry: ServerRegistry | None = None

    def attach(self, registry: ServerRegistry) -> None:
        """Start following ``registry`` (and stop following the one before, if any)."""
        if self.registry is not None and self in self.registry.observers:
            self.registry.observers.remove(self)
        self.registry = registry
        registry.observers.append(self)
        for entry in registry:
            self.updated(entry)

    def detach(self) -> None:
        if self.registry is not None and self in self.registry.observers:
            self.registry.observers.remove(self)
        self.registry = None

    # RegistryObserver: redirectors without an index ignore changes.
    def updated(self, entry: ServerEntry) -> None:
        return None

    def removed(self, entry: ServerEntry) -> None:
        return None

    @abc.abstractmethod
    def choose(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        """The edge for the next client, or None when none is available."""

    def redirect(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        if self.registry is not servers:
            self.attach(servers)
        entry = self.choose(servers, now)
        if entry is not None:
            servers.count_redirect(entry, now)
        return entry


class _LoadIndex:
    """A min-heap of edges by a key, with lazy deletion (a version per edge).

    ``best`` pops entries whose version is old or that cannot take clients;
    stale edges go to a second heap until their next report puts them back.
    """

    def __init__(self) -> None:
        self.heap: list[tuple[float, float, int, uuid.UUID]] = []
        self.stale: list[tuple[float, float, int, uuid.UUID]] = []
        self.version: dict[uuid.UUID, int] = {}

    def push(self, entry: ServerEntry, key: float, tiebreak: float) -> None:
        """(Re)index ``entry``; a fresh random ``tiebreak`` each time keeps ties even."""
        version = self.version.get(entry.guid, 0) + 1
        self.version[entry.guid] = version
        heapq.heappush(self.heap, (key, tiebreak, version, entry.guid))
        if len(self.heap) > 4 * len(self.version) + 64:  # too many dead items: rebuild
            self.heap = [i for i in self.heap if self.version.get(i[3]) == i[2]]
            heapq.heapify(self.heap)

    def forget(self, guid: uuid.UUID) -> None:
        self.version.pop(guid, None)

    def best(self, servers: ServerRegistry, now: float,
             usable: Callable[[ServerEntry], bool] | None = None) -> ServerEntry | None:
        for heap, may_park in ((self.heap, True), (self.stale, False)):
            while heap:
                _, _, version, guid = heap[0]
                entry = servers.get(guid)
                if entry is None or self.version.get(guid) != version:
                    heapq.heappop(heap)
                    continue
                if not (entry.available and servers.is_live(entry, now)) or (
                        usable is not None and not usable(entry)):
                    heapq.heappop(heap)  # back in with its next report or undrain
                    continue
                if may_park and not entry.is_fresh(now):
                    heapq.heappush(self.stale, heapq.heappop(heap))
                    continue
                return entry
        return None


class ConcurrentConnects(Redirector):
    """Least effective load: reported load + redirects it does not include yet.

    Ties are broken by a random rank drawn at every change of an edge, so
    after a round of equal reports any of them may come first, and equal
    edges then take turns as their counts grow.
    """

    name = "concurrent-connects"

    def __init__(self, *, rng: random.Random | None = None) -> None:
        super().__init__(rng=rng)
        self.index = _LoadIndex()

    def key(self, entry: ServerEntry) -> float:
        return entry.effective_load

    def updated(self, entry: ServerEntry) -> None:
        self.index.push(entry, self.key(entry), self.rng.random())

    def removed(self, entry: ServerEntry) -> None:
        self.index.forget(entry.guid)

    def choose(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        if self.registry is not servers:
            self.attach(servers)
        return self.index.best(servers, now)


class Weighted(ConcurrentConnects):
    """Effective load ÷ capacity, for edges that report a capacity; a full edge gets nothing.

    Edges without a capacity are chosen, by effective load, only when no edge
    with a capacity has room left.
    """

    name = "weighted"
    NO_CAPACITY = 1e9  # ranks every edge without a capacity after every edge with room

    def key(self, entry: ServerEntry) -> float:
        if entry.capacity is None:
            return self.NO_CAPACITY + entry.effective_load
        return entry.effective_load / entry.capacity

    def choose(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        if self.registry is not servers:
            self.attach(servers)
        return self.index.best(servers, now, usable=_has_room)


def _has_room(entry: ServerEntry) -> bool:
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
        if self.registry is not servers:
            self.attach(servers)
        picks: list[ServerEntry] = []
        for _ in range(P2C_TRIES):
            entry = servers.sample(self.rng)
            if entry is None:
                return None
            if (entry.available and servers.is_live(entry, now) and entry.is_fresh(now)
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
        order = servers._order
        stale: ServerEntry | None = None
        for _ in range(len(order)):
            self._next %= len(order)
            entry = order[self._next]
            self._next += 1
            if entry.available and servers.is_live(entry, now):
                if entry.is_fresh(now):
                    return entry
                stale = stale or entry
        return stale


BUILTIN_REDIRECTORS: dict[str, type[Redirector]] = {
    ConcurrentConnects.name: ConcurrentConnects,
    Weighted.name: Weighted,
    PowerOfTwoChoices.name: PowerOfTwoChoices,
    RoundRobin.name: RoundRobin,
}


def redirector_class(spec: str) -> type[Redirector]:
    return resolve_plugin("redirector", spec, BUILTIN_REDIRECTORS, Redirector)
