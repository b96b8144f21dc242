"""SRS: its clients and streams, from its HTTP API (``GET /api/v1/streams``).

The answer's shape is SRS's (trunk/src/app/srs_app_http_api.cpp SrsGoApiStreams,
srs_app_statistic.cpp SrsStatisticStream::dumps): ``{"code": 0, "server", "service",
"pid", "streams": [stream...]}``, a page of ``?start=S&count=N`` streams (N at least
10; no total is given: a full page means there may be more). A stream has ``id``,
``name``, ``vhost``, ``app``, ``clients``, ``kbps: {"recv_30s", "send_30s"}`` and
``publish: {"active", "cid"}``. A ``code`` other than 0 is SRS's error number.
tests/data/srs-streams.json is such an answer.

``clients`` is SRS's own count of a stream's connections: its players (RTMP,
HTTP-FLV, HLS, WebRTC, SRT) and its publisher, but not an edge's own pull from its
origin (SrsStatistic::on_client is called for each connection that plays or
publishes; the edge's ingester is none). The load is that count summed, as SRS says
it, like nginx-rtmp's nclients. ``publish.active`` is true while the stream has a
source, a publisher or an edge's pull: those are its streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lbmgmt.configfile import Section
from lbmgmt.edge.monitors.base import LoadMonitor, MonitorError
from lbmgmt.edge.monitors.fetch import (
    MAX_PAGES, HttpSource, checked_url, json_array, json_count, json_flag, json_object,
    json_rate, json_text, member, most_watched, parse_json, read_timeout, shown_url)

PAGE_SIZE = 100


class SrsMonitor(LoadMonitor):
    """Clients of an SRS server, summed over its streams; its streams are "app/name" of
    those with a source, most clients first; its bandwidth the streams' ``send_30s``."""

    name = "srs"

    def __init__(self, api_url: str, *, timeout: float = 2.0) -> None:
        api_url = checked_url(api_url, "api_url").rstrip("/")
        if "?" in api_url or "#" in api_url:
            raise ValueError("api_url must be the API's root, without a query")
        self.api_url = api_url
        self.timeout = timeout
        self._http = HttpSource(timeout=timeout)
        self._streams: list[str] | None = None
        self._bandwidth: float | None = None

    @classmethod
    def from_config(cls, section: Section) -> SrsMonitor:
        url = section.get_str("api_url", "http://127.0.0.1:1985")
        timeout = read_timeout(section)
        try:
            return cls(url, timeout=timeout)
        except ValueError as exc:
            section.fail("api_url", str(exc))

    def describe(self) -> str:
        return f"{self.name} api_url={shown_url(self.api_url)}"

    async def read(self) -> float:
        streams = await self.list_streams()
        load = 0
        clients: dict[str, int] = {}
        kbps: float | None = None if streams else 0.0
        for stream in streams.values():
            load += stream.clients
            if stream.active:
                name = f"{stream.app}/{stream.name}"
                clients[name] = clients.get(name, 0) + stream.clients
            if stream.send_kbps is not None:
                kbps = (kbps or 0.0) + stream.send_kbps
        self._streams = most_watched(clients)
        self._bandwidth = None if kbps is None else kbps * 1000
        return float(load)

    async def list_streams(self) -> dict[str, _Stream]:
        """Every stream by id, page after page until one is not full (MonitorError past
        ``MAX_PAGES`` full pages: a load counted from a part would be wrong)."""
        url = f"{self.api_url}/api/v1/streams"
        shown = shown_url(url)
        streams: dict[str, _Stream] = {}
        async with self._http.deadline(shown):
            for page in range(MAX_PAGES + 1):  # (one more: is the last full page the last?)
                start = page * PAGE_SIZE
                where = f"{shown} start={start}"
                answer = json_object(parse_json(await self._http.get(
                    f"{url}?start={start}&count={PAGE_SIZE}"), where), where)
                code = json_count(member(answer, "code"), f"{where}: code")
                if code != 0:
                    raise MonitorError(f"{where} answered SRS error code {code}")
                items = json_array(member(answer, "streams"), f"{where}: streams")
                if len(items) > PAGE_SIZE:  # (the bound on the work is pages x this)
                    raise MonitorError(f"{where}: {len(items)} streams on a page of "
                                       f"{PAGE_SIZE} asked for")
                if page == MAX_PAGES and items:
                    break
                for index, item in enumerate(items):
                    stream = _stream(item, f"{where}: streams[{index}]")
                    streams[stream.id] = stream  # (one moved to the next page: listed twice)
                if len(items) < PAGE_SIZE:
                    return streams
        raise MonitorError(f"{shown}: more than {MAX_PAGES * PAGE_SIZE} streams "
                           f"({MAX_PAGES} pages of {PAGE_SIZE})")

    def bandwidth(self) -> float | None:
        """The streams' ``kbps.send_30s`` summed (SRS's 30 s average), in bits/s."""
        return self._bandwidth

    def streams(self) -> list[str] | None:
        return self._streams

    async def close(self) -> None:
        await self._http.close()


@dataclass(frozen=True, slots=True)
class _Stream:
    id: str
    app: str
    name: str
    clients: int
    active: bool  # it has a source: a publisher, or an edge's pull
    send_kbps: float | None


def _stream(item: Any, where: str) -> _Stream:
    stream = json_object(item, where)
    name = json_text(member(stream, "name"), f"{where}.name")
    app = json_text(member(stream, "app"), f"{where}.app")
    vhost = stream.get("vhost")
    ident = stream.get("id")
    if not isinstance(ident, str):
        ident = f"{vhost}/{app}/{name}"
    clients = json_count(member(stream, "clients"), f"{where}.clients")
    publish = json_object(member(stream, "publish"), f"{where}.publish")
    active = json_flag(member(publish, "active"), f"{where}.publish.active")
    kbps = stream.get("kbps")
    send = None
    if kbps is not None:
        rates = json_object(kbps, f"{where}.kbps")
        if "send_30s" in rates:
            send = json_rate(rates["send_30s"], f"{where}.kbps.send_30s")
    return _Stream(ident, app, name, clients, active, send)
