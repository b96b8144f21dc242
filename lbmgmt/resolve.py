"""Asking a balancer's redirect application where to go, for clients that cannot.

ffmpeg, OBS, librtmp, GStreamer and VLC print an RTMP redirect and give up.
``resolve("rtmp://lb:1935/redirect/stream")`` does the handshake and
``connect`` itself, reads ``ex.redirect`` from the rejection and returns the
edge URL with the stream appended, so a shell can run
``ffmpeg -i "$(lbmgmt resolve rtmp://lb/redirect/stream)"``.

``rtsp://`` URLs are asked with a DESCRIBE and give the 302's ``Location``:
ffmpeg follows an RTSP redirect when playing but not when publishing, so
``ffmpeg … -f rtsp "$(lbmgmt resolve rtsp://lb/live/s)"`` publishes to an edge.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httptools

from lbmgmt.endpoints import join_host_port
from lbmgmt.rtmp.client import ClientConnection
from lbmgmt.rtmp.server import CommandReceived, ConnectionFailed, HandshakeCompleted

DEFAULT_PORT = 1935
RTSP_PORT = 554
RTMP_SCHEMES = ("rtmp", "rtmps", "rtmpt", "rtmpts", "rtmpe", "rtmpte")
MAX_ANSWER = 65536  # bytes of an RTSP answer's head read, at most


class ResolveError(Exception):
    pass


def split_rtmp_url(url: str) -> tuple[str, int, str, str, str]:
    """(host, port, app, stream, query) of ``rtmp://host[:port]/app/stream[?query]``."""
    parts = urlsplit(url)
    if parts.scheme != "rtmp":
        raise ResolveError(f"only rtmp:// URLs can be resolved, not {parts.scheme or url!r}")
    if not parts.hostname:
        raise ResolveError(f"no host in {url!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ResolveError(f"bad port in {url!r}") from None
    app, _, stream = parts.path.lstrip("/").partition("/")
    if not app:
        raise ResolveError(f"no application in {url!r} (rtmp://host/app/stream)")
    return parts.hostname, port, app, stream, parts.query


async def resolve(url: str, *, timeout: float = 5.0) -> str:
    """The edge URL (stream and query appended) the balancer redirects ``url`` to."""
    if urlsplit(url).scheme.lower() in ("rtsp", "rtsps"):
        host, port = _rtsp_host_port(url)
        ask = _ask_rtsp(host, port, url)
    else:
        host, port, app, stream, query = split_rtmp_url(url)
        ask = _ask(host, port, app, stream, query)
    try:
        return await asyncio.wait_for(ask, timeout)
    except TimeoutError:
        raise ResolveError(f"{host}:{port} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise ResolveError(f"cannot connect to {join_host_port(host, port)}: "
                           f"{exc.strerror or exc}") from None


async def _ask(host: str, port: int, app: str, stream: str, query: str) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    conn = ClientConnection()
    try:
        writer.write(conn.data_to_send())
        while True:
            data = await reader.read(65536)
            if not data:
                raise ResolveError("the server closed the connection without an answer")
            for event in conn.receive_data(data):
                if isinstance(event, ConnectionFailed):
                    raise ResolveError(f"RTMP error: {event.reason}")
                if isinstance(event, HandshakeCompleted):
                    conn.connect(app, f"rtmp://{join_host_port(host, port)}/{app}")
                elif isinstance(event, CommandReceived):
                    name = event.command.name
                    if name == "_result":
                        raise ResolveError(f"'{app}' accepted the connection: it does not "
                                           "redirect on connect")
                    if name == "_error":
                        return _redirect_from(event.command.args, stream, query)
            writer.write(conn.data_to_send())
            await writer.drain()
    finally:
        writer.close()


def _rtsp_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme.lower() == "rtsps":
        raise ResolveError("rtsps:// cannot be resolved yet (TLS); ask with rtsp://")
    if not parts.hostname:
        raise ResolveError(f"no host in {url!r}")
    try:
        return parts.hostname, parts.port or RTSP_PORT
    except ValueError:
        raise ResolveError(f"bad port in {url!r}") from None


class _RtspAnswer:
    """httptools callbacks: the status and the Location of one answer's head."""

    def __init__(self) -> None:
        self.location: str | None = None
        self.reason = ""
        self.done = False

    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"location" and self.location is None:
            self.location = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self.done = True


async def _ask_rtsp(host: str, port: int, url: str) -> str:
    if any(c in url for c in "\r\n "):
        raise ResolveError(f"bad RTSP URL {url!r}")
    reader, writer = await asyncio.open_connection(host, port)
    answer = _RtspAnswer()
    parser = httptools.HttpResponseParser(answer)
    try:
        writer.write(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n"
                     "User-Agent: lbmgmt-resolve\r\n\r\n".encode("latin-1"))
        read = 0
        while not answer.done:
            data = await reader.read(4096)
            read += len(data)
            if not data or read > MAX_ANSWER:
                raise ResolveError("the server closed the connection without an answer"
                                   if not data else "the RTSP answer's head is too long")
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise ResolveError(f"not an RTSP answer: {exc}") from None
    finally:
        writer.close()
    status = parser.get_status_code()
    if parser.get_http_version() != "1.0" or status not in (301, 302, 303, 307):
        raise ResolveError(f"RTSP {status} {answer.reason}: the balancer gave no redirect")
    return checked_url(answer.location or "", ("rtsp", "rtsps"))


def checked_url(url: str, schemes: tuple[str, ...]) -> str:
    """``url`` if it is an absolute URL of one of ``schemes`` with a host, fit to hand to
    a player on its command line (``$(lbmgmt resolve …)``), else ResolveError."""
    parts = urlsplit(url)
    if (parts.scheme.lower() not in schemes or not parts.hostname
            or any(c <= " " or c == "\x7f" for c in url)):
        raise ResolveError(f"the answer's redirect is not an absolute {'/'.join(schemes)} "
                           f"URL: {url[:200]!r}")
    return url


def _redirect_from(args: list[object], stream: str, query: str) -> str:
    info = args[0] if args and isinstance(args[0], dict) else {}
    ex = info.get("ex")
    target = ex.get("redirect") if isinstance(ex, dict) else None
    if not isinstance(target, str) or not target:
        raise ResolveError(f"rejected without a redirect: {info.get('code', '?')}: "
                           f"{info.get('description', '')}")
    checked_url(target, RTMP_SCHEMES)
    url = f"{target.rstrip('/')}/{stream}" if stream else target
    return f"{url}{'&' if '?' in url else '?'}{query}" if query else url


def resolve_sync(url: str, *, timeout: float = 5.0) -> str:
    """``resolve`` for code that has no event loop running."""
    return asyncio.run(resolve(url, timeout=timeout))
