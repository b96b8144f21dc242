"""nginx-rtmp: its clients and streams, from its ``rtmp_stat all`` XML page.

The page's shape is nginx-rtmp-module's ngx_rtmp_stat_module.c: ``<rtmp>`` holds
``bw_out`` (bits/s, the whole server) and one ``<server>`` per rtmp server block,
each with ``<application>``s; an application with ``live on`` has ``<live>``, one
``<stream>`` per stream (``<name>``, ``<nclients>``: its players and its publisher,
``<publishing/>`` and ``<active/>`` while published) and its own ``<nclients>``
total. A stream is listed while anyone uses it, a player waiting for its publisher
included. tests/data/nginx-rtmp-stat.xml is such a page, recorded.
"""

from __future__ import annotations

import asyncio

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import cast

from lbmgmt.configfile import Section
from lbmgmt.edge.monitors.base import LoadMonitor, MonitorError
from lbmgmt.edge.monitors.fetch import (HttpSource, checked_url, most_watched, read_filter,
                                         read_timeout, shown_url)

# The stat page lists every client (some 250 bytes each): 8 MiB is some 30 000 clients.
MAX_STAT_PAGE = 8 * 1024 * 1024
MAX_ELEMENTS = 500_000  # XML elements parsed at most (about 50 MB of tree)
PARSE_CHUNK = 64 * 1024  # fed to the parser at a time, off the event loop


class NginxRtmpMonitor(LoadMonitor):
    """Viewer count of an nginx-rtmp server beside the edge, from its stat page.

    nginx-rtmp's ``rtmp_stat all`` XML has no per-server total: the load is
    the sum of ``application/live/nclients`` over the applications (all, or
    those listed), which counts players and publishers alike. Its streams are
    every ``application/live/stream`` of those applications as "app/name", most
    clients first.
    """

    name = "nginx-rtmp"

    def __init__(self, url: str, *, applications: Iterable[str] | None = None,
                 timeout: float = 2.0) -> None:
        self.url = checked_url(url, "stat URL")
        self.applications = frozenset(applications) if applications else None
        self.timeout = timeout
        self._http = HttpSource(timeout=timeout, max_bytes=MAX_STAT_PAGE)
        self._bandwidth: float | None = None
        self._streams: list[str] | None = None

    @classmethod
    def from_config(cls, section: Section) -> NginxRtmpMonitor:
        url = section.get_str("url", "http://127.0.0.1:8080/stat")
        apps = read_filter(section, "applications", "application")
        timeout = read_timeout(section)
        try:
            return cls(url, applications=apps, timeout=timeout)
        except ValueError as exc:
            section.fail("url", str(exc))

    def describe(self) -> str:
        apps = f" applications={','.join(sorted(self.applications))}" if self.applications else ""
        return f"{self.name} url={shown_url(self.url)}{apps}"

    async def read(self) -> float:
        # (parsed in a thread, a chunk at a time: the loop runs between chunks)
        root = await asyncio.to_thread(stat_page, await self._http.get(self.url))
        load = count_nginx_rtmp_clients(root, self.applications)
        self._streams = nginx_rtmp_streams(root, self.applications)
        self._bandwidth = bw_out(root)
        return float(load)

    def bandwidth(self) -> float | None:
        """nginx-rtmp's own ``bw_out`` (bits/s, all applications), from the last read."""
        return self._bandwidth

    def streams(self) -> list[str] | None:
        return self._streams

    async def close(self) -> None:
        await self._http.close()


def stat_page(xml: bytes) -> ET.Element:
    """nginx-rtmp's ``rtmp_stat all`` document, or MonitorError saying what it is not
    (past ``MAX_ELEMENTS`` elements too: bytes alone do not bound a tree's CPU and
    memory)."""
    parser: ET.XMLPullParser = ET.XMLPullParser(events=("start",))
    elements = 0
    root: ET.Element | None = None
    try:
        for offset in range(0, max(len(xml), 1), PARSE_CHUNK):
            parser.feed(xml[offset:offset + PARSE_CHUNK])
            for event in parser.read_events():
                if root is None:
                    root = cast(tuple[str, ET.Element], event)[1]
                elements += 1
            if elements > MAX_ELEMENTS:
                raise MonitorError(f"stat page has more than {MAX_ELEMENTS} elements")
        parser.close()
    except ET.ParseError as exc:
        raise MonitorError(f"stat page is not XML: {exc}") from None
    if root is None:
        raise MonitorError("stat page is not XML: no element")
    if root.tag != "rtmp":
        raise MonitorError(f"stat page root is <{root.tag}>, not <rtmp> (rtmp_stat all?)")
    return root


def bw_out(root: ET.Element) -> float | None:
    """The server's outbound bits/s (``<rtmp><bw_out>``), None if absent or not a number."""
    text = root.findtext("bw_out")
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value < float("inf") else None


def _nclients(element: ET.Element, where: str) -> int:
    text = element.findtext("nclients")
    if text is None:
        raise MonitorError(f"nclients missing ({where})")
    try:
        value = int(text)
    except ValueError:
        raise MonitorError(f"nclients is not a number: {text[:40]!r} ({where})") from None
    if value < 0:
        raise MonitorError(f"nclients is negative: {value} ({where})")
    return value


def _applications(root: ET.Element, applications: frozenset[str] | None
                  ) -> Iterable[tuple[str, ET.Element]]:
    for app in root.iterfind("server/application"):
        name = app.findtext("name") or ""
        if applications is None or name in applications:
            yield name, app


def count_nginx_rtmp_clients(xml: bytes | ET.Element,
                             applications: frozenset[str] | None = None) -> int:
    root = xml if isinstance(xml, ET.Element) else stat_page(xml)
    total = 0
    for name, app in _applications(root, applications):
        live = app.find("live")
        if live is not None:
            total += _nclients(live, f"application {name}")
    return total


def nginx_rtmp_streams(xml: bytes | ET.Element,
                       applications: frozenset[str] | None = None) -> list[str]:
    """Every live stream of the applications (all, or those listed) as "app/name", most
    clients first (a name in two server blocks: their clients added up)."""
    root = xml if isinstance(xml, ET.Element) else stat_page(xml)
    clients: dict[str, int] = {}
    for app_name, app in _applications(root, applications):
        if not app_name:
            continue
        for stream in app.iterfind("live/stream"):
            name = stream.findtext("name")
            if not name:
                continue
            key = f"{app_name}/{name}"
            count = _nclients(stream, f"stream {key}")
            clients[key] = clients.get(key, 0) + count
    return most_watched(clients)
