"""Asking a balancer where to go, for clients that cannot, and printing the edge URL.

ffmpeg, OBS, librtmp, GStreamer and VLC print an RTMP redirect and give up, ffmpeg
follows no RTSP redirect when publishing, and SRT has no redirect at all. ``resolve``
asks the balancer the way the URL's scheme does and returns the edge URL, so a shell
can run ``ffmpeg -i "$(lbmgmt resolve URL)"``:

- ``rtmp://lb/redirect/stream``: the handshake and ``connect``; ``ex.redirect`` from
  the rejection, the stream appended. An application that accepts the connect
  (``redirect_on_connect = false``) is asked with ``createStream`` and ``play(stream)``,
  and its ``onStatus`` names the edge URL with the stream already in it.
- ``rtsp://lb/live/s``: a DESCRIBE; the 302's ``Location``.
- ``http(s)://lb/redirect/…``: a GET; the 301/302/303/307/308's absolute ``Location``.
  ``http(s)://lb/loadbalancer[?stream=app/name]``: the ``redirect=`` address as
  ``rtmp://<address>[/<stream>]`` (that address is the edge's RTMP one).
- ``srt://lb:PORT?streamid=…``: the stream named by the streamid (``stream_of_streamid``)
  is asked for over HTTP (``/loadbalancer?stream=…``) on the balancer's client port (the
  URL's host, port 1935, or ``via``), and the URL comes back with the edge's host: the
  port and query stay as given (the edges' SRT port; the address's port is their RTMP
  one).

Everything printed passes ``checked_url``: an absolute URL of the expected scheme, so a
hostile balancer cannot hand a shell ``-y`` or ``file:///…``. The parsing and the URL
building are plain functions (tested without sockets); the asking is asyncio.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

import httptools

from lbmgmt.endpoints import Endpoint, join_host_port, split_address, url_authority
from lbmgmt.rtmp.client import ClientConnection
from lbmgmt.rtmp.commands import command_message
from lbmgmt.rtmp.server import CommandReceived, ConnectionFailed, HandshakeCompleted
from lbmgmt.streams import named

DEFAULT_PORT = 1935  # the balancer's client port: RTMP, RTSP and HTTP
RTSP_PORT = 554
HTTP_PORTS = {"http": 80, "https": 443}
RTMP_SCHEMES = ("rtmp", "rtmps", "rtmpt", "rtmpts", "rtmpe", "rtmpte")
HTTP_SCHEMES = ("http", "https")
SCHEMES = "rtmp://, rtsp://, srt:// or http(s)://"
MAX_ANSWER = 65536  # bytes of an answer (RTSP or HTTP head and body) read, at most
REDIRECTS = (301, 302, 303, 307, 308)
# What SRT servers write before the stream in a plain streamid (``play/live/s``).
STREAMID_MODES = ("play/", "publish/", "read/", "request/")


class ResolveError(Exception):
    pass


# -- URLs and streamids, without sockets ---------------------------------------------------
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


@dataclass(frozen=True, slots=True)
class SrtUrl:
    """``srt://[user@]host:port[/path][?query]``, the query as given (everything after the
    first ``?``: a streamid such as ``#!::r=live/s`` is not a URL fragment to SRT clients)."""

    host: str
    port: int
    query: str
    userinfo: str = ""  # "user@" or ""
    path: str = ""
    stream: str | None = None  # what the streamid names, if anything

    def with_host(self, host: str) -> str:
        """This URL on ``host`` (an edge's), everything else as given."""
        url = f"srt://{self.userinfo}{url_authority(host, self.port)}{self.path}"
        return f"{url}?{self.query}" if self.query else url


def split_srt_url(url: str) -> SrtUrl:
    head, _, query = url.partition("?")
    parts = urlsplit(head)
    if parts.scheme.lower() != "srt":
        raise ResolveError(f"not an srt:// URL: {url[:200]!r}")
    if parts.fragment or "#" in head:
        raise ResolveError(f"bad srt:// URL {url[:200]!r} ('#' before the query)")
    if not parts.hostname:
        raise ResolveError(f"no host in {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ResolveError(f"bad port in {url!r}") from None
    if port is None:
        raise ResolveError(f"no port in {url!r}: an srt:// URL names the edges' SRT port "
                           "(srt://lb:PORT?streamid=…)")
    userinfo = parts.netloc.rpartition("@")[0]
    streamid = query_value(query, "streamid")
    return SrtUrl(parts.hostname, port, query, f"{userinfo}@" if userinfo else "", parts.path,
                  None if streamid is None else stream_of_streamid(streamid))


def query_value(query: str, key: str) -> str | None:
    """The first ``key=`` value in ``query``, percent-decoded ('+' stays '+', as ffmpeg
    decodes an SRT streamid); None if there is none."""
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if eq and name == key:
            return unquote(value)
    return None


def stream_of_streamid(streamid: str) -> str | None:
    """The stream an SRT streamid names (``app/stream``, or MediaMTX's path), or None.

    - the SRT Access Control syntax (SRS, ZLMediaKit, MediaMTX): ``#!::r=live/s,m=publish``,
      keys ``r`` (the resource), ``h`` (host; SRS's older ``h=[vhost/]live/s`` holds the
      stream), ``m``, ``u``, ``s``, ``t`` and any others; ``r=live/s?secret=x`` as SRS allows;
    - MediaMTX's ``action:path[:query]`` and ``action:path:user:pass[:query]``, action
      ``read`` or ``publish`` (the credentials and query are never sent to the balancer);
    - ``play/live/s``, ``publish/live/s`` (the mode word dropped when a path follows it);
    - a URL (OvenMediaEngine's ``srt://host:port/app/stream``): its path;
    - anything else as it is (``live/s``).

    Query, surrounding slashes and over-long names are dropped as the balancer drops them
    (``lbmgmt.streams.named``).
    """
    sid = streamid.strip()
    if sid.startswith("#!::"):
        keys: dict[str, str] = {}
        for item in sid[4:].replace("?", ",").split(","):
            key, eq, value = item.partition("=")
            if eq and key not in keys:
                keys[key] = value
        name = keys.get("r")
        if not name and "/" in keys.get("h", ""):
            host = keys["h"]
            name = host.partition("/")[2] if host.count("/") > 1 else host
        return named(name) if name else None
    action, colon, rest = sid.partition(":")
    if colon and action in ("read", "publish"):
        return named(rest.split(":")[0])
    if "://" in sid:
        return named(urlsplit(sid).path)
    for mode in STREAMID_MODES:
        if sid.startswith(mode) and "/" in sid[len(mode):].strip("/"):
            return named(sid[len(mode):])
    return named(sid)


def balancer_endpoint(url_host: str, via: str | None) -> tuple[str, int]:
    """Where an srt:// URL's balancer is asked over HTTP: ``via`` (``host[:port]``, port
    1935 by default), else the URL's host on port 1935."""
    if via is None:
        return url_host, DEFAULT_PORT
    try:
        endpoint = Endpoint.parse(via, default_port=DEFAULT_PORT)
    except ValueError as exc:
        raise ResolveError(f"--via: {exc}") from None
    if not endpoint.host or not endpoint.port:
        raise ResolveError(f"--via needs a host and port, not {via!r}")
    return endpoint.host, endpoint.port


def loadbalancer_target(stream: str | None) -> str:
    """The request target asking for an edge for ``stream``: ``/loadbalancer?stream=live/s``
    (percent-encoded but for the slashes)."""
    if not stream:
        return "/loadbalancer"
    return "/loadbalancer?stream=" + quote(stream, safe="/")


def address_of_answer(status: int, reason: str, body: bytes) -> str:
    """The edge address in a ``/loadbalancer`` answer (``redirect=host:port``)."""
    text = body.decode("utf-8", "replace").strip()
    if status != 200:
        raise ResolveError(f"HTTP {status} {reason}: the balancer gave no edge"
                           + (f" ({_shown(text)})" if text else ""))
    address = text.removeprefix("redirect=")
    if (address == text or not address or len(address) > 255
            or any(c <= " " or c == "\x7f" for c in address)):
        raise ResolveError(f"not a redirect=<address> answer: {_shown(text)}")
    return address


def edge_host(address: str) -> str:
    host = split_address(address)[0]
    if not host:
        raise ResolveError(f"the balancer's edge address has no host: {_shown(address)}")
    return host


def rtmp_url_of_address(address: str, stream: str | None) -> str:
    """``rtmp://<address>[/<stream>]``: a ``redirect=`` address is an edge's RTMP one."""
    url = f"rtmp://{url_authority(edge_host(address), split_address(address)[1])}"
    if stream:
        url += "/" + quote(stream, safe="/!$&'()*+,;=:@")
    return checked_url(url, ("rtmp",))


def checked_url(url: str, schemes: tuple[str, ...]) -> str:
    """``url`` if it is an absolute URL of one of ``schemes`` with a host, fit to hand to
    a player on its command line (``$(lbmgmt resolve …)``), else ResolveError."""
    parts = urlsplit(url)
    if (parts.scheme.lower() not in schemes or not parts.hostname
            or any(c <= " " or c == "\x7f" for c in url)):
        raise ResolveError(f"the answer's redirect is not an absolute {'/'.join(schemes)} "
                           f"URL: {url[:200]!r}")
    return url


def _shown(text: str) -> str:
    """``text`` fit for one line of an error message: printable, at most 200 characters."""
    line = "".join(c if c.isprintable() else "?" for c in text.partition("\n")[0])
    return line[:200] + ("…" if len(line) > 200 else "")


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


# -- asking ----------------------------------------------------------------------------------
def tls_context(cafile: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """For https:// URLs: the system's CAs (or ``cafile``'s) verify the balancer's
    certificate and name, unless ``insecure``."""
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ResolveError(f"cannot read --cafile {cafile}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def resolve(url: str, *, timeout: float = 5.0, via: str | None = None,
                  cafile: str | None = None, insecure: bool = False) -> str:
    """The edge URL the balancer sends ``url``'s client to (see the module's doc).

    ``via``: the balancer to ask for an srt:// URL (``host[:port]``); ``cafile`` and
    ``insecure``: how an https:// URL's certificate is checked."""
    if any(c <= " " or c == "\x7f" for c in url):
        raise ResolveError(f"bad URL {url[:200]!r}: spaces or control characters")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if via is not None and scheme != "srt":
        raise ResolveError("--via is for srt:// URLs (the others name the balancer)")
    if scheme in ("rtsp", "rtsps"):
        host, port = _rtsp_host_port(url)
        ask = _ask_rtsp(host, port, url)
    elif scheme == "srt":
        srt = split_srt_url(url)
        host, port = balancer_endpoint(srt.host, via)
        ask = _ask_srt(host, port, srt)
    elif scheme in HTTP_SCHEMES:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ResolveError(f"no host in {url!r}")
        try:
            host, port = parts.hostname, parts.port or HTTP_PORTS[scheme]
        except ValueError:
            raise ResolveError(f"bad port in {url!r}") from None
        context = tls_context(cafile, insecure) if scheme == "https" else None
        ask = _ask_http(host, port, parts.path or "/", parts.query, context)
    elif scheme == "rtmp":
        host, port, app, stream, query = split_rtmp_url(url)
        ask = _ask(host, port, app, stream, query)
    else:
        raise ResolveError(f"cannot resolve {scheme + '://' if scheme else repr(url[:200])} "
                           f"URLs: give {SCHEMES}")
    where = join_host_port(host, port)
    try:
        return await asyncio.wait_for(ask, timeout)
    except TimeoutError:
        raise ResolveError(f"{where} did not answer within {timeout:g} s") from None
    except ssl.SSLCertVerificationError as exc:
        raise ResolveError(f"{where}: TLS certificate not verified: {exc.verify_message} "
                           "(--cafile FILE trusts a private CA)") from None
    except ssl.SSLError as exc:
        raise ResolveError(f"{where}: TLS error: {exc.reason or exc}") from None
    except OSError as exc:
        raise ResolveError(f"cannot connect to {where}: {exc.strerror or exc}") from None


def resolve_sync(url: str, *, timeout: float = 5.0, via: str | None = None,
                 cafile: str | None = None, insecure: bool = False) -> str:
    """``resolve`` for code that has no event loop running."""
    return asyncio.run(resolve(url, timeout=timeout, via=via, cafile=cafile, insecure=insecure))


async def _ask(host: str, port: int, app: str, stream: str, query: str) -> str:
    """RTMP: connect; a rejection names the edge (stream appended); an accepted connect
    is followed by createStream and play, whose onStatus names the edge URL."""
    reader, writer = await asyncio.open_connection(host, port)
    conn = ClientConnection()
    played = False
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
                    command = event.command
                    if command.name == "_error" and command.transaction_id == 1:
                        return _redirect_from(command.args, stream, query)
                    if command.name == "_result" and command.transaction_id == 1:
                        if not stream:
                            raise ResolveError(
                                f"'{app}' accepted the connection: it redirects on play, "
                                "so name a stream (rtmp://host/app/STREAM)")
                        conn.send(command_message("createStream", 2.0, None))
                    elif command.transaction_id == 2 and command.name in ("_result",
                                                                          "_error"):
                        stream_id = command.args[0] if command.args else None
                        if command.name == "_error" or not isinstance(stream_id, float):
                            raise ResolveError(f"'{app}' refused createStream")
                        name = f"{stream}?{query}" if query else stream
                        conn.send(command_message("play", 0.0, None, name,
                                                  stream_id=int(stream_id)))
                        played = True
                    elif command.name == "onStatus" and played:
                        # the balancer's URL carries the stream (and query) already
                        return _redirect_from(command.args, "", "")
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


class _Answer:
    """httptools callbacks: the status, the Location and the body of one answer."""

    def __init__(self) -> None:
        self.location: str | None = None
        self.reason = ""
        self.body = bytearray()
        self.headers_done = False
        self.done = False

    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"location" and self.location is None:
            self.location = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


async def _read_answer(reader: asyncio.StreamReader, *, protocol: str,
                       head_for: tuple[int, ...] | None = None) -> tuple[int, _Answer, str]:
    """Read one answer, at most MAX_ANSWER bytes: (status, callbacks, version). Only the
    head for a status in ``head_for`` (for any if None); else the body too, to its length,
    its last chunk or the end of the connection."""
    answer = _Answer()
    parser = httptools.HttpResponseParser(answer)
    read = 0
    while not (answer.done or (answer.headers_done and (
            head_for is None or parser.get_status_code() in head_for))):
        data = await reader.read(4096)
        read += len(data)
        if read > MAX_ANSWER:
            raise ResolveError(f"the {protocol} answer is longer than {MAX_ANSWER} bytes")
        if not data:
            if answer.headers_done:  # a body that ends with the connection
                break
            raise ResolveError("the server closed the connection without an answer")
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            break
        except httptools.HttpParserError as exc:
            raise ResolveError(f"not an {protocol} answer: {exc}") from None
    return parser.get_status_code(), answer, parser.get_http_version()


async def _ask_rtsp(host: str, port: int, url: str) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n"
                     "User-Agent: lbmgmt-resolve\r\n\r\n".encode("latin-1"))
        status, answer, version = await _read_answer(reader, protocol="RTSP")
    finally:
        writer.close()
    if version != "1.0" or status not in (301, 302, 303, 307):
        raise ResolveError(f"RTSP {status} {answer.reason}: the balancer gave no redirect")
    return checked_url(answer.location or "", ("rtsp", "rtsps"))


async def _get(host: str, port: int, target: str,
               context: ssl.SSLContext | None = None) -> tuple[int, _Answer]:
    """One HTTP/1.1 GET of ``target``; the answer (its body too unless it redirects)."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=host if context else None)
    try:
        default = HTTP_PORTS["https" if context else "http"]
        writer.write(f"GET {target} HTTP/1.1\r\n"
                     f"Host: {url_authority(host, None if port == default else port)}\r\n"
                     "User-Agent: lbmgmt-resolve\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                     .encode("latin-1"))
        status, answer, _ = await _read_answer(reader, protocol="HTTP", head_for=REDIRECTS)
    finally:
        writer.close()
    return status, answer


async def _ask_http(host: str, port: int, path: str, query: str,
                    context: ssl.SSLContext | None) -> str:
    target = f"{path}?{query}" if query else path
    status, answer = await _get(host, port, target, context)
    if path == "/loadbalancer":
        address = address_of_answer(status, answer.reason, bytes(answer.body))
        return rtmp_url_of_address(address, named(query_value(query, "stream") or ""))
    if status not in REDIRECTS:
        text = bytes(answer.body).decode("utf-8", "replace").strip()
        raise ResolveError(f"HTTP {status} {answer.reason}: the balancer gave no redirect"
                           + (f" ({_shown(text)})" if text else ""))
    return checked_url(answer.location or "", HTTP_SCHEMES)


async def _ask_srt(host: str, port: int, srt: SrtUrl) -> str:
    status, answer = await _get(host, port, loadbalancer_target(srt.stream))
    address = address_of_answer(status, answer.reason, bytes(answer.body))
    return checked_url(srt.with_host(edge_host(address)), ("srt",))
