"""What every load monitor is: ``LoadMonitor``, and the ``MonitorError`` it raises."""

from __future__ import annotations

import abc
from typing import ClassVar

from lbmgmt.configfile import Section


class MonitorError(RuntimeError):
    """The monitor could not measure; the edge keeps its last load and says so."""


class LoadMonitor(abc.ABC):
    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, section: Section) -> LoadMonitor:
        """Build from the ``[monitor]`` table; read every key so typos are caught."""

    @abc.abstractmethod
    async def read(self) -> float:
        """The current load, a finite number >= 0."""

    def describe(self) -> str:
        return self.name

    def bandwidth(self) -> float | None:
        """Outbound bits/s the media server says it sends, as of the last ``read``;
        None if this monitor cannot tell (the default)."""
        return None

    def streams(self) -> list[str] | None:
        """The names of the streams the media server carries now, as of the last ``read``,
        most watched first (``lbmgmt.streams``: "app/stream" for RTMP servers, the path
        for MediaMTX); None if this monitor cannot tell (the default)."""
        return None

    async def close(self) -> None:
        return None
