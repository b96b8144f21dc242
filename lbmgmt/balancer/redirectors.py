"""Redirectors: which available edge gets the next client.

Chosen by short name or ``module:Class`` in the balancer config. Every
redirect a redirector hands out is counted on the chosen edge
(``ServerRegistry.count_redirect``) until that edge's next report, so the
choice sees the clients already sent its way and not only stale load.
"""

from __future__ import annotations

import abc
import random
from typing import ClassVar

from lbmgmt.balancer.registry import ServerEntry, ServerRegistry
from lbmgmt.plugins import resolve_plugin


class Redirector(abc.ABC):
    name: ClassVar[str]

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    @abc.abstractmethod
    def choose(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        """The edge for the next client, or None when none is available."""

    def redirect(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        entry = self.choose(servers, now)
        if entry is not None:
            servers.count_redirect(entry)
        return entry


class ConcurrentConnects(Redirector):
    """Least effective load (reported load + redirects since that report).

    Ties are broken at random so that, right after a round of equal reports,
    the first edge in the table is not always the one to get the next client.
    """

    name = "concurrent-connects"

    def choose(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        best: list[ServerEntry] = []
        best_load = float("inf")
        for entry in servers.available(now):
            load = entry.effective_load
            if load < best_load:
                best, best_load = [entry], load
            elif load == best_load:
                best.append(entry)
        if not best:
            return None
        return best[0] if len(best) == 1 else self.rng.choice(best)


class RoundRobin(Redirector):
    """Each available edge in turn, whatever its load."""

    name = "round-robin"

    def __init__(self, *, rng: random.Random | None = None) -> None:
        super().__init__(rng=rng)
        self._next = 0

    def choose(self, servers: ServerRegistry, now: float) -> ServerEntry | None:
        candidates = list(servers.available(now))
        if not candidates:
            return None
        entry = candidates[self._next % len(candidates)]
        self._next = (self._next + 1) % len(candidates)
        return entry


BUILTIN_REDIRECTORS: dict[str, type[Redirector]] = {
    ConcurrentConnects.name: ConcurrentConnects,
    RoundRobin.name: RoundRobin,
}


def redirector_class(spec: str) -> type[Redirector]:
    return resolve_plugin("redirector", spec, BUILTIN_REDIRECTORS, Redirector)
