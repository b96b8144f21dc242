"""The load (and streams) set from outside: the default when embedding."""

from __future__ import annotations

import math
from collections.abc import Iterable

from lbmgmt.configfile import Section
from lbmgmt.edge.monitors.base import LoadMonitor


class ManualMonitor(LoadMonitor):
    """Load set from outside (the daemon's API): the default when embedding. Its streams
    too, if given (``streams`` in ``[monitor]``, or ``set_streams``): None until then."""

    name = "manual"

    def __init__(self, load: float = 0.0, *, streams: Iterable[str] | None = None) -> None:
        self.load = 0.0
        self.set_load(load)
        self._streams: list[str] | None = None
        if streams is not None:
            self.set_streams(streams)

    @classmethod
    def from_config(cls, section: Section) -> ManualMonitor:
        return cls(section.get_number("load", 0.0, min=0),
                   streams=section.get_str_list("streams", None))

    def set_load(self, load: float) -> None:
        load = float(load)
        if not (math.isfinite(load) and load >= 0):
            raise ValueError(f"load must be a finite number >= 0, not {load!r}")
        self.load = load

    def set_streams(self, names: Iterable[str] | None) -> None:
        """The streams it says it carries, most watched first (None: it cannot tell)."""
        if names is None:
            self._streams = None
            return
        names = list(names)
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError("stream names must be non-empty strings")
        self._streams = names

    async def read(self) -> float:
        return self.load

    def streams(self) -> list[str] | None:
        return None if self._streams is None else list(self._streams)
