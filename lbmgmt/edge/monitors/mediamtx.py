"""MediaMTX: its readers and paths, from its control API (``GET /v3/paths/list``).

The answer's shape is MediaMTX's (api/openapi.yaml ``PathList``; internal/defs/
api_path.go): ``{"itemCount", "pageCount", "items": [path...]}``, paginated by
``?itemsPerPage=N&page=P`` (P from 0; ``pageCount`` 0 when there is no path). A
path has ``name``, ``readers`` (one entry per reader of any protocol: RTSP,
RTMP, HLS, WebRTC, SRT sessions), ``available`` and ``outboundBytes`` (``ready``
and ``bytesSent`` in older versions: newer ones send both, the old names deprecated).
tests/data/mediamtx-paths-list.json is such an answer.

The API listens on 127.0.0.1:9997 with ``api: yes``; its default users let
loopback read it without a login.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from lbmgmt.configfile import Section
from lbmgmt.edge.bandwidth import CounterRate
from lbmgmt.edge.monitors.base import LoadMonitor, MonitorError
from lbmgmt.edge.monitors.fetch import (
    MAX_PAGES, HttpSource, checked_url, json_array, json_count, json_flag, json_object,
    json_text, member, most_watched, parse_json, read_filter, read_timeout, shown_url)

PAGE_SIZE = 100
# Its outbound bits/s are the byte counters' growth over at least this long (a rate over
# one 50 ms load sample would read bursty sends as nothing between bursts).
BANDWIDTH_WINDOW = 2.0


class MediaMtxMonitor(LoadMonitor):
    """Readers of a MediaMTX server, summed over its paths (all, or those listed: a
    listed name counts itself and the paths under it, ``live`` counts ``live/a``).

    Its streams are the paths that are available (a publisher or a source is on), most
    readers first; its bandwidth is the growth of the paths' byte counters (all paths).
    """

    name = "mediamtx"

    def __init__(self, api_url: str, *, paths: Iterable[str] | None = None,
                 timeout: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        api_url = checked_url(api_url, "api_url").rstrip("/")
        if "?" in api_url or "#" in api_url:
            raise ValueError("api_url must be the API's root, without a query")
        self.api_url = api_url
        self.paths = frozenset(p.strip("/") for p in paths) if paths else None
        self.timeout = timeout
        self.clock = clock
        self._http = HttpSource(timeout=timeout)
        self._streams: list[str] | None = None
        self._sent_by_path: dict[str, int] | None = None  # bytes sent, at the last read
        self._sent = 0  # bytes sent since the first read: only grows
        self._rate = CounterRate()
        self._bandwidth: float | None = None

    @classmethod
    def from_config(cls, section: Section) -> MediaMtxMonitor:
        url = section.get_str("api_url", "http://127.0.0.1:9997")
        paths = read_filter(section, "paths", "path")
        timeout = read_timeout(section)
        try:
            return cls(url, paths=paths, timeout=timeout)
        except ValueError as exc:
            section.fail("api_url", str(exc))

    def describe(self) -> str:
        paths = f" paths={','.join(sorted(self.paths))}" if self.paths else ""
        return f"{self.name} api_url={shown_url(self.api_url)}{paths}"

    def counts(self, name: str) -> bool:
        """Whether path ``name`` is one this monitor counts."""
        return self.paths is None or any(
            name == p or name.startswith(p + "/") for p in self.paths)

    async def read(self) -> float:
        paths = await self.list_paths()
        readers: dict[str, int] = {}
        sent: dict[str, int] = {}
        load = 0
        for name, (count, available, sent_bytes) in paths.items():
            if sent_bytes is not None:
                sent[name] = sent_bytes
            if not self.counts(name):
                continue
            load += count
            if available:
                readers[name] = count
        self._streams = most_watched(readers)
        self._bandwidth = self._measure(sent) if sent or not paths else None
        return float(load)

    async def list_paths(self) -> dict[str, tuple[int, bool, int | None]]:
        """Every path by name: (readers, available, bytes sent or None), all pages."""
        url = f"{self.api_url}/v3/paths/list"
        shown = shown_url(url)
        paths: dict[str, tuple[int, bool, int | None]] = {}
        page, pages = 0, 1
        async with self._http.deadline(shown):
            while page < pages:
                where = f"{shown} page {page}"
                answer = json_object(parse_json(await self._http.get(
                    f"{url}?itemsPerPage={PAGE_SIZE}&page={page}"), where), where)
                pages = json_count(member(answer, "pageCount"), f"{where}: pageCount")
                if pages > MAX_PAGES:
                    raise MonitorError(f"{shown}: {pages} pages of {PAGE_SIZE} paths, more "
                                       f"than the {MAX_PAGES} read")
                items = json_array(member(answer, "items"), f"{where}: items")
                if len(items) > PAGE_SIZE:  # (the bound on the work is pages x this)
                    raise MonitorError(f"{where}: {len(items)} items on a page of "
                                       f"{PAGE_SIZE} asked for")
                for index, item in enumerate(items):
                    name, value = _path(item, f"{where}: items[{index}]")
                    paths[name] = value  # (a path moved to the next page: listed twice)
                page += 1
        return paths

    def _measure(self, sent: dict[str, int]) -> float | None:
        """Bits/s out: each path's byte counter's growth since the last read (a path new
        since: all of its count; one whose count went back, restarted: its count)."""
        before = self._sent_by_path
        if before is not None:
            for name, count in sent.items():
                last = before.get(name, 0)
                self._sent += count - last if count >= last else count
        self._sent_by_path = sent
        return self._rate.update(self.clock(), self._sent, BANDWIDTH_WINDOW)

    def bandwidth(self) -> float | None:
        return self._bandwidth

    def streams(self) -> list[str] | None:
        return self._streams

    async def close(self) -> None:
        await self._http.close()


def _path(item: Any, where: str) -> tuple[str, tuple[int, bool, int | None]]:
    path = json_object(item, where)
    name = json_text(member(path, "name"), f"{where}.name")
    readers = member(path, "readers")
    count = 0 if readers is None else len(json_array(readers, f"{where}.readers"))
    flag = "available" if "available" in path else "ready"
    available = json_flag(member(path, flag), f"{where}.{flag}")
    counter = next((k for k in ("outboundBytes", "bytesSent") if k in path), None)
    sent = None if counter is None else json_count(path[counter], f"{where}.{counter}")
    return name, (count, available, sent)
