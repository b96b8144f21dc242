"""The monitors that ask a media server over HTTP, against its recorded answers.

A small aiohttp server on 127.0.0.1 plays the media server: it serves the answers in
tests/data, paginated as the real server paginates, or misbehaves on demand (an HTTP
error, not JSON, the wrong shape, too big, too slow). Where each answer's shape comes
from:

- nginx-rtmp-stat.xml: recorded from a real nginx-rtmp (its first comment says how);
  ngx_rtmp_stat_module.c writes it.
- mediamtx-paths-list.json: MediaMTX's ``GET /v3/paths/list`` (api/openapi.yaml
  ``PathList``; internal/defs/api_path.go ``APIPathList``/``APIPath``, the fields in
  their order, the deprecated ``ready``/``bytesSent`` beside ``available``/
  ``outboundBytes`` as 1.17 sends them); paginated as internal/api/paginate.go does.
- srs-streams.json: SRS's ``GET /api/v1/streams`` (trunk/src/app/srs_app_http_api.cpp
  ``SrsGoApiStreams::serve_http``: code, server, service, pid, streams; each stream as
  srs_app_statistic.cpp ``SrsStatisticStream::dumps`` writes it); paged by start and
  count as ``SrsStatistic::dumps_streams`` does (count at least 10).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from lbmgmt.configfile import ConfigError
from lbmgmt.edge.config import load_edge_config
from lbmgmt.edge.monitors import (MediaMtxMonitor, MonitorError, NginxRtmpMonitor,
                                  SrsMonitor, monitor_class)
from lbmgmt.edge.monitors import srs
from lbmgmt.edge.monitors.fetch import MAX_ANSWER_BYTES, MAX_PAGES
from lbmgmt.edge.monitors.nginx_rtmp import MAX_ELEMENTS, MAX_STAT_PAGE

DATA = Path(__file__).parents[1] / "data"
STAT_XML = (DATA / "nginx-rtmp-stat.xml").read_bytes()
MEDIAMTX = json.loads((DATA / "mediamtx-paths-list.json").read_text())
SRS = json.loads((DATA / "srs-streams.json").read_text())


@dataclass
class MediaServer:
    """What the fake server answers; a test changes it between reads."""

    paths: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(
        MEDIAMTX["items"]))
    streams: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(
        SRS["streams"]))
    stat: bytes = STAT_XML
    status: int = 200
    body: bytes | None = None  # served as it is instead of the answer
    chunked_body: bytes | None = None  # likewise, without a Content-Length
    stall: bool = False  # never answer (until the test ends)
    srs_code: int = 0
    page_count: int | None = None  # a pageCount to claim instead of the real one
    requests: list[str] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""


async def answer(request: web.Request, server: MediaServer, make: Any) -> web.StreamResponse:
    server.requests.append(request.path_qs)
    if server.stall:
        await server.released.wait()
    if server.status != 200:
        return web.Response(status=server.status, text="no")
    if server.chunked_body is not None:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for start in range(0, len(server.chunked_body), 65536):
            await resp.write(server.chunked_body[start:start + 65536])
        await resp.write_eof()
        return resp
    if server.body is not None:
        return web.Response(body=server.body, content_type="application/json")
    return make()


def mediamtx_page(request: web.Request, server: MediaServer) -> web.Response:
    # internal/api/paginate.go: itemsPerPage 100 unless given, page from 0
    per_page = int(request.query.get("itemsPerPage", "100"))
    page = int(request.query.get("page", "0"))
    items = server.paths
    pages = 0 if not items else -(-len(items) // per_page)
    body = {"itemCount": len(items),
            "pageCount": pages if server.page_count is None else server.page_count,
            "items": items[page * per_page:(page + 1) * per_page]}
    return web.json_response(body)


def srs_page(request: web.Request, server: MediaServer) -> web.Response:
    # SrsGoApiStreams: start >= 0, count >= 10
    start = max(0, int(request.query.get("start", "0")))
    count = max(10, int(request.query.get("count", "0")))
    body = {key: value for key, value in SRS.items() if key != "streams"}
    body["code"] = server.srs_code
    if server.srs_code == 0:
        body["streams"] = server.streams[start:start + count]
    else:
        body = {"code": server.srs_code}
    return web.json_response(body)


@pytest.fixture
async def media() -> AsyncIterator[MediaServer]:
    server = MediaServer()

    async def stat(request: web.Request) -> web.StreamResponse:
        return await answer(request, server, lambda: web.Response(
            body=server.stat, content_type="text/xml"))

    async def paths(request: web.Request) -> web.StreamResponse:
        return await answer(request, server, lambda: mediamtx_page(request, server))

    async def streams(request: web.Request) -> web.StreamResponse:
        return await answer(request, server, lambda: srs_page(request, server))

    app = web.Application()
    app.router.add_get("/stat", stat)
    app.router.add_get("/v3/paths/list", paths)
    app.router.add_get("/api/v1/streams", streams)
    test_server = TestServer(app, host="127.0.0.1", port=0)
    await test_server.start_server()
    server.url = str(test_server.make_url("")).rstrip("/")
    try:
        yield server
    finally:
        server.released.set()
        await test_server.close()


def make(kind: str, media: MediaServer, **kw: Any):
    if kind == "nginx-rtmp":
        return NginxRtmpMonitor(f"{media.url}/stat", **kw)
    if kind == "mediamtx":
        return MediaMtxMonitor(media.url, **kw)
    return SrsMonitor(media.url, **kw)


async def read(monitor) -> float:
    try:
        return await monitor.read()
    finally:
        await monitor.close()


# -- what each reads from its server's recorded answer ---------------------------------------

async def test_nginx_rtmp_streams_are_app_slash_name_most_clients_first(media):
    monitor = make("nginx-rtmp", media)
    assert await read(monitor) == 7  # live 5 (a publisher, three players, one waiting), tv 2
    # live/b: its publisher and two players; a player waiting on live/waiting counts
    assert monitor.streams() == ["live/b", "tv/news", "live/s", "live/waiting"]
    assert monitor.bandwidth() == 0.0  # bw_out, as recorded (nginx-rtmp's 10 s average)
    only_live = make("nginx-rtmp", media, applications=["live"])
    assert await read(only_live) == 5
    assert only_live.streams() == ["live/b", "live/s", "live/waiting"]


async def test_mediamtx_counts_readers_and_lists_available_paths(media):
    monitor = make("mediamtx", media)
    assert monitor.streams() is None  # (nothing read yet)
    assert await read(monitor) == 7  # cam1 2 readers, live/news 5, live/quiet 0, proxied 0
    # proxied is configured but not available (no source on): not a stream it carries
    assert monitor.streams() == ["live/news", "cam1", "live/quiet"]
    assert media.requests == ["/v3/paths/list?itemsPerPage=100&page=0"]
    live = make("mediamtx", media, paths=["live"])  # live and what is under it
    assert await read(live) == 5
    assert live.streams() == ["live/news", "live/quiet"]
    assert await read(make("mediamtx", media, paths=["cam"])) == 0  # not a prefix of cam1


async def test_mediamtx_before_1_17_says_ready_and_bytes_sent(media):
    for path in media.paths:
        for key in ("available", "availableTime", "online", "onlineTime", "tracks2",
                    "inboundBytes", "outboundBytes", "inboundFramesInError"):
            del path[key]
    monitor = make("mediamtx", media)
    assert await read(monitor) == 7
    assert monitor.streams() == ["live/news", "cam1", "live/quiet"]


async def test_mediamtx_reads_every_page(media):
    template = MEDIAMTX["items"][1]
    media.paths = [dict(copy.deepcopy(template), name=f"live/s{n:03}",
                        readers=[{"type": "rtmpConn", "id": str(r)} for r in range(n % 4)])
                   for n in range(250)]
    monitor = make("mediamtx", media)
    assert await read(monitor) == sum(n % 4 for n in range(250))
    assert media.requests == [f"/v3/paths/list?itemsPerPage=100&page={p}" for p in (0, 1, 2)]
    streams = monitor.streams()
    assert streams is not None and len(streams) == 250 and streams[0] == "live/s003"


async def test_mediamtx_bandwidth_is_the_byte_counters_growth(media):
    now = [100.0]
    monitor = make("mediamtx", media, clock=lambda: now[0])
    try:
        await monitor.read()
        assert monitor.bandwidth() is None  # nothing to compare with yet
        media.paths[0]["outboundBytes"] += 1_000_000  # cam1
        media.paths[1]["outboundBytes"] += 500_000  # live/news
        now[0] += 1.0
        await monitor.read()
        assert monitor.bandwidth() is None  # not a whole window yet (2 s)
        media.paths[1]["outboundBytes"] = 250_000  # live/news restarted: 250 kB since
        media.paths.append(dict(copy.deepcopy(media.paths[2]), name="new",
                                outboundBytes=50_000))  # new since: all of its bytes
        now[0] += 1.0
        await monitor.read()
        assert monitor.bandwidth() == (1_000_000 + 500_000 + 250_000 + 50_000) * 8 / 2.0
    finally:
        await monitor.close()


async def test_srs_counts_clients_and_lists_streams_with_a_source(media):
    monitor = make("srs", media)
    assert await read(monitor) == 16  # 4 + 9 + 2 (waiting players) + 1
    # live/waiting has players but no publisher: not a stream it carries
    assert monitor.streams() == ["live/news", "live/livestream", "studio/cam"]
    assert monitor.bandwidth() == (7488 + 19968 + 0 + 0) * 1000  # kbps.send_30s
    assert media.requests == ["/api/v1/streams?start=0&count=100"]


async def test_srs_reads_pages_until_one_is_not_full(media):
    template = SRS["streams"][0]
    media.streams = [dict(copy.deepcopy(template), id=f"vid-{n}", name=f"s{n}", clients=1)
                     for n in range(150)]
    monitor = make("srs", media)
    assert await read(monitor) == 150
    assert media.requests == ["/api/v1/streams?start=0&count=100",
                              "/api/v1/streams?start=100&count=100"]


async def test_srs_an_error_code_is_a_failure(media):
    media.srs_code = 1028  # ERROR_RTMP_STREAM_NOT_FOUND, say
    with pytest.raises(MonitorError, match="SRS error code 1028"):
        await read(make("srs", media))


# -- every answer within its budget, or a failure that says why ----------------------------

@pytest.mark.parametrize("kind", ["nginx-rtmp", "mediamtx", "srs"])
async def test_an_http_error_is_a_failure_naming_the_status(media, kind):
    media.status = 503
    with pytest.raises(MonitorError, match="answered HTTP 503"):
        await read(make(kind, media))


@pytest.mark.parametrize("kind", ["mediamtx", "srs"])
@pytest.mark.parametrize("body, message", [
    (b"<html>not found</html>", "is not JSON"),
    (b'{"pageCount": NaN}', "is not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
    (b"\xff\xfe{}", "is not JSON"),
    (b"[]", "is an array, not an object"),
])
async def test_an_answer_that_is_not_a_json_object_is_a_failure(media, kind, body, message):
    media.body = body
    with pytest.raises(MonitorError, match=message):
        await read(make(kind, media))


@pytest.mark.parametrize("change, message", [
    (lambda p: p.__setitem__(0, "cam1"), r"items\[0\] is a string 'cam1', not an object"),
    (lambda p: p[1].pop("name"), r"items\[1\].name is missing, not a string"),
    (lambda p: p[1].__setitem__("readers", 5), r"items\[1\].readers is a number 5, not an array"),
    (lambda p: p[2].__setitem__("available", "yes"), r"items\[2\].available is a string"),
    (lambda p: [x.pop(k) for x in p for k in ("available", "ready")],
     r"items\[0\]\.ready is missing"),
    (lambda p: p[0].__setitem__("outboundBytes", -1), r"items\[0\].outboundBytes is a number"
                                                        r" -1, not a whole number >= 0"),
])
async def test_a_mediamtx_answer_of_another_shape_names_the_field(media, change, message):
    change(media.paths)
    with pytest.raises(MonitorError, match="unexpected answer: .*page 0: " + message):
        await read(make("mediamtx", media))


async def test_a_mediamtx_answer_without_items_or_with_too_many_pages(media):
    media.body = b'{"itemCount": 0, "pageCount": 0}'
    with pytest.raises(MonitorError, match="items is missing, not an array"):
        await read(make("mediamtx", media))
    media.body = None
    media.page_count = MAX_PAGES + 1
    with pytest.raises(MonitorError, match=f"{MAX_PAGES + 1} pages of 100 paths, more than"):
        await read(make("mediamtx", media))
    assert len(media.requests) == 2  # one page each: the rest never asked for


@pytest.mark.parametrize("change, message", [
    (lambda s: s[0].__setitem__("clients", -2), r"streams\[0\].clients is a number -2"),
    (lambda s: s[1].__setitem__("clients", True), r"streams\[1\].clients is a boolean"),
    (lambda s: s[1].pop("publish"), r"streams\[1\].publish is missing, not an object"),
    (lambda s: s[2]["kbps"].__setitem__("send_30s", "fast"),
     r"streams\[2\].kbps.send_30s is a string"),
    (lambda s: s[3].__setitem__("app", None), r"streams\[3\].app is null, not a string"),
])
async def test_an_srs_answer_of_another_shape_names_the_field(media, change, message):
    change(media.streams)
    with pytest.raises(MonitorError, match="unexpected answer: .*start=0: " + message):
        await read(make("srs", media))


async def test_srs_more_streams_than_the_pages_read_is_a_failure_not_a_part(media,
                                                                          monkeypatch):
    monkeypatch.setattr(srs, "MAX_PAGES", 3)  # (100 pages, as shipped: the same, slower)
    template = SRS["streams"][0]
    media.streams = [dict(copy.deepcopy(template), id=f"vid-{n}", name=f"s{n}")
                     for n in range(301)]  # three full pages and one more stream
    with pytest.raises(MonitorError, match="more than 300 streams"):
        await read(make("srs", media))
    assert [r.partition("?")[2] for r in media.requests] == [
        f"start={start}&count=100" for start in (0, 100, 200, 300)]
    media.streams.pop()  # exactly three full pages: the fourth, empty, says it is all
    assert await read(make("srs", media)) == sum(s["clients"] for s in media.streams)


@pytest.mark.parametrize("kind", ["nginx-rtmp", "mediamtx", "srs"])
@pytest.mark.parametrize("announced", [True, False])
async def test_an_answer_over_its_budget_is_refused(media, kind, announced):
    limit = MAX_STAT_PAGE if kind == "nginx-rtmp" else MAX_ANSWER_BYTES
    big = b" " * (limit + 1)
    if announced:
        media.body = big
    else:
        media.chunked_body = big
    with pytest.raises(MonitorError, match=f"answered more than {limit} bytes"):
        await read(make(kind, media))


@pytest.mark.parametrize("kind", ["nginx-rtmp", "mediamtx", "srs"])
async def test_a_server_that_does_not_answer_in_time_is_a_failure(media, kind):
    media.stall = True
    with pytest.raises(MonitorError, match=r"no (whole )?answer within 0.2 s"):
        await read(make(kind, media, timeout=0.2))


@pytest.mark.parametrize("kind", ["nginx-rtmp", "mediamtx", "srs"])
async def test_nothing_listening_is_a_failure_not_a_traceback(media, kind):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        media.url = f"http://127.0.0.1:{port}"
        with pytest.raises(MonitorError, match="cannot read http://127.0.0.1"):
            await read(make(kind, media))


async def test_a_password_in_the_url_is_never_shown(media, caplog):
    caplog.set_level(logging.DEBUG)
    media.status = 401
    monitor = MediaMtxMonitor(media.url.replace("http://", "http://viewer:s3cret@"))
    assert "s3cret" not in monitor.describe() and "viewer:***@" in monitor.describe()
    with pytest.raises(MonitorError) as caught:
        await read(monitor)
    assert "s3cret" not in str(caught.value) and "answered HTTP 401" in str(caught.value)


# -- configured by name ---------------------------------------------------------------------

def test_the_new_monitors_are_configured_by_name(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('[edge]\nredirect_address = "a"\n[monitor]\ntype = "mediamtx"\n'
                    'api_url = "http://127.0.0.1:9997/"\npaths = ["live"]\ntimeout_ms = 500\n')
    monitor = load_edge_config(path).monitor
    assert isinstance(monitor, MediaMtxMonitor)
    assert (monitor.api_url, monitor.paths, monitor.timeout) == (
        "http://127.0.0.1:9997", {"live"}, 0.5)
    path.write_text('[edge]\nredirect_address = "a"\n[monitor]\ntype = "srs"\n')
    monitor = load_edge_config(path).monitor
    assert isinstance(monitor, SrsMonitor) and monitor.api_url == "http://127.0.0.1:1985"
    assert monitor_class("srs") is SrsMonitor and monitor_class("mediamtx") is MediaMtxMonitor


@pytest.mark.parametrize("text, line, field, message", [
    ('type = "mediamtx"\napi_url = "ftp://x"\n', 5, "monitor.api_url", "must be http(s)://"),
    ('type = "srs"\napi_url = "http://h:99999"\n', 5, "monitor.api_url", "is not a URL"),
    ('type = "srs"\napi_url = "http://h/?a=1"\n', 5, "monitor.api_url", "without a query"),
    ('type = "mediamtx"\npaths = "live"\n', 5, "monitor.paths", "a list of strings"),
    ('type = "srs"\ntimeout_ms = 0\n', 5, "monitor.timeout_ms", "at least 10"),
    ('type = "srs"\nurl = "http://h"\n', 5, "monitor.url", "unknown key"),
])
def test_their_config_errors_name_file_line_and_field(tmp_path, text, line, field, message):
    path = tmp_path / "edge.toml"
    path.write_text(f'[edge]\nredirect_address = "a"\n[monitor]\n{text}')
    with pytest.raises(ConfigError) as caught:
        load_edge_config(path)
    assert (caught.value.line, caught.value.field) == (line, field), str(caught.value)
    assert message in str(caught.value)


async def test_every_page_together_is_read_within_the_timeout():
    from lbmgmt.edge.monitors.fetch import HttpSource

    http = HttpSource(timeout=0.2)
    with pytest.raises(MonitorError, match="cannot read X: no whole answer within 0.2 s"):
        async with http.deadline("X"):
            await asyncio.Event().wait()  # pages that each answer in time, never all
    await http.close()


# -- what an outside-in attack found (each failed before its fix) ---------------------

def test_a_stat_page_of_too_many_elements_is_refused_not_parsed_whole():
    from lbmgmt.edge.monitors.nginx_rtmp import stat_page
    bomb = b"<rtmp>" + b"<a/>" * (MAX_ELEMENTS + 1) + b"</rtmp>"
    with pytest.raises(MonitorError, match="more than 500000 elements"):
        stat_page(bomb)


def test_a_missing_nclients_is_a_failure_not_a_load_of_0():
    from lbmgmt.edge.monitors.nginx_rtmp import count_nginx_rtmp_clients
    page = (b"<rtmp><server><application><name>live</name><live><stream><name>s</name>"
            b"</stream></live></application></server></rtmp>")
    with pytest.raises(MonitorError, match="nclients missing"):
        count_nginx_rtmp_clients(page)


@pytest.mark.parametrize("kind", ["nginx-rtmp", "mediamtx", "srs"])
async def test_a_redirect_is_not_followed_to_another_server(media, kind):
    media.status = 302  # (aiohttp would follow a Location; none is followed at all)
    with pytest.raises(MonitorError, match="answered HTTP 302"):
        await read(make(kind, media))


async def test_a_page_with_more_items_than_asked_for_is_refused(media):
    media.body = json.dumps({"pageCount": 1, "itemCount": 101, "items": [
        {**MEDIAMTX["items"][0], "name": f"p{n}"} for n in range(101)]}).encode()
    with pytest.raises(MonitorError, match="101 items on a page of 100"):
        await read(make("mediamtx", media))


@pytest.mark.parametrize("text,key", [('type = "mediamtx"\npaths = []', "paths"),
                                      ('type = "nginx-rtmp"\napplications = []',
                                       "applications")])
def test_an_empty_filter_is_a_config_error_not_a_load_of_0_for_ever(tmp_path, text, key):
    from lbmgmt.configfile import ConfigError
    from lbmgmt.edge.config import load_edge_config
    path = tmp_path / "edge.toml"
    path.write_text(f'[edge]\nredirect_address = "a"\n[monitor]\n{text}\n')
    with pytest.raises(ConfigError, match=f"monitor.{key}"):
        load_edge_config(path)
