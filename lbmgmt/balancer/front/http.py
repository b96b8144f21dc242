"""One HTTP/1.x connection on the client port, sans-IO, parsed by ``httptools`` (llhttp).

``receive_data(bytes, now)`` returns events: ``Request`` (answer each with
``send``, in order: pipelining needs nothing more, every answer is ready at
once), ``Refused`` (a bad or over-long request: its answer is queued and the
connection closes after it) and ``TimedOut``. ``data_to_send()`` hands out the
bytes; once ``closed`` and drained, the glue closes the transport.

Budgets, all from ``HttpLimits``:
- a request head (request line and headers) has ``head_timeout`` from its
  first byte, or from the connection's start for the first one, and at most
  ``max_head`` bytes (414 while still in the request line, else 431), counted
  per slice fed: the glue feeds slices of at most ``SLICE`` bytes, so a head
  is refused somewhere between ``max_head`` and ``max_head + SLICE`` bytes and
  never one under ``max_head - SLICE``;
- a body (players send none) at most ``max_body`` bytes, else 413;
- between a response and the next request, ``keepalive_timeout``.
Time is passed in (``now``, any monotonic clock in seconds), deadlines go out
through ``get_timer()``, as in ``lbmgmt.rtmp.server``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import httptools

from lbmgmt.rtmp.server import TimedOut

SLICE = 4096  # the most the glue feeds at once (and per loop turn)

REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
           414: "URI Too Long", 431: "Request Header Fields Too Large",
           503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class HttpLimits:
    head_timeout: float = 10.0  # seconds
    keepalive_timeout: float = 15.0  # seconds
    max_head: int = 8192  # bytes
    max_body: int = 16384  # bytes


class Request:
    """One request, as sent (a plain slotted class: made once per request, so kept cheap)."""

    __slots__ = ("method", "target", "path", "query", "headers", "version", "keep_alive")

    def __init__(self, method: str, target: bytes, path: bytes, query: bytes | None,
                 headers: list[tuple[bytes, bytes]], version: str, keep_alive: bool) -> None:
        self.method = method  # "GET", "HEAD", …
        self.target = target  # as sent: path and query, still percent-encoded
        self.path = path
        self.query = query  # None: no "?" at all
        self.headers = headers
        self.version = version  # "1.1", "1.0"
        self.keep_alive = keep_alive

    def __repr__(self) -> str:
        return f"Request({self.method} {self.target!r} HTTP/{self.version})"


@dataclass(frozen=True, slots=True)
class Refused:
    """The request cannot be answered; the status went out and the connection closes."""

    status: int
    reason: str


Event = Request | Refused | TimedOut


class Response:
    """Status, body and headers; Date, Content-Length and Connection are added on writing.

    ``headers`` that are the same tuple object every time (module constants) have
    their encoded block cached by ``HttpConnection``.
    """

    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: bytes = b"",
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.status = status
        self.body = body
        self.headers = headers


_BLOCKS: dict[tuple[int, tuple[tuple[str, str], ...]], bytes] = {}  # status line + headers
_MAX_BLOCKS = 256


def _block(status: int, headers: tuple[tuple[str, str], ...]) -> bytes:
    key = (status, headers)
    block = _BLOCKS.get(key)
    if block is None:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        block = "".join(lines).encode("latin-1")
        if len(_BLOCKS) < _MAX_BLOCKS:  # constant header sets; a Location is not kept
            _BLOCKS[key] = block
    return block


_METHODS: dict[bytes, str] = {}


class _State(enum.Enum):
    IDLE = "idle"  # between requests (or before the first): no byte of a head yet
    HEAD = "head"
    BODY = "body"
    CLOSED = "closed"  # nothing more is read; what is queued still goes out


class _Stop(Exception):
    """Raised in a parser callback to stop reading (a refusal, or after Connection: close)."""


class HttpConnection:
    def __init__(self, limits: HttpLimits, *, now: float) -> None:
        self.limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self._state = _State.IDLE
        self._deadline: float | None = now + limits.head_timeout  # the first request's head
        # the message being read
        self._url = b""
        self._in_request_line = True
        self._head_size = 0  # header fields, as "name: value\r\n"
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = 0
        self._head_bytes = 0  # fed since this message's head began (per slice, see above)
        self._head_began = False  # during one feed: a new head began in it
        self._events: list[Event] = []
        self._out = bytearray()
        self._waiting = 0  # requests handed out and not yet answered
        self.requests = 0
        self.date = b""  # the Date header's value, set by the glue (once a second)

    @property
    def closed(self) -> bool:
        """No more input is read; close the transport once ``data_to_send`` is drained."""
        return self._state is _State.CLOSED

    # -- input ---------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Events for ``data`` (at most ``SLICE`` bytes at once keeps the head count tight)."""
        if self._state is _State.CLOSED or not data:
            return []
        if self._state is _State.IDLE:
            # A head has head_timeout from its first byte, but never later than the
            # deadline already running: bytes between requests (llhttp skips blank
            # lines) must not buy a connection time.
            head = now + self.limits.head_timeout
            self._deadline = head if self._deadline is None else min(self._deadline, head)
        self._head_began = False
        counted = self._state in (_State.IDLE, _State.HEAD)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):
                raise
        except httptools.HttpParserUpgrade:
            # llhttp stops after an Upgrade (or CONNECT) head: the request is answered as
            # a plain one, and nothing after it is read.
            self._state = _State.CLOSED
            self._deadline = None
        except httptools.HttpParserError as exc:
            self._refuse(400, f"bad request: {exc}")
        if self._state is _State.HEAD:
            self._head_bytes = len(data) if (self._head_began or not counted) else (
                self._head_bytes + len(data))
            if self._head_bytes > self.limits.max_head:
                if self._in_request_line:
                    self._refuse(414, "request line too long")
                else:
                    self._refuse(431, "request head too large")
        events, self._events = self._events, []
        return events

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._state is _State.CLOSED:
            raise _Stop
        self._state = _State.HEAD
        self._url = b""
        self._in_request_line = True
        self._head_size = 0
        self._headers = []
        self._body = 0
        self._head_began = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_head:
            self._refuse(414, "request line too long")
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self._in_request_line = False
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self._in_request_line = False
        if len(self._url) + self._head_size > self.limits.max_head:
            self._refuse(431, "request head too large")
            raise _Stop
        self._state = _State.BODY
        self._head_bytes = 0

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > self.limits.max_body:
            self._refuse(413, "request body too large")
            raise _Stop

    def on_message_complete(self) -> None:
        target = self._url
        if target[:1] == b"/":  # origin form, what clients send: no parsing needed
            path, question, query = target.partition(b"?")
            path, _, _ = path.partition(b"#")
            query_or_none: bytes | None = query.partition(b"#")[0] if question else None
        else:  # absolute form ("http://lb/path") or "*"
            try:
                url = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                self._refuse(400, "bad request target")
                raise _Stop from None
            path, query_or_none = url.path or b"/", url.query
        parser = self._parser
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = raw_method.decode("ascii", "replace")
            if len(_METHODS) < 64:
                _METHODS[raw_method] = method
        keep_alive = parser.should_keep_alive()
        self.requests += 1
        self._waiting += 1
        self._events.append(Request(method, target, path, query_or_none, self._headers,
                                    parser.get_http_version(), keep_alive))
        if keep_alive:
            self._state = _State.IDLE
            self._deadline = None  # until it is answered: then the keep-alive deadline
        else:
            self._state = _State.CLOSED  # answer this one, read nothing more
            self._deadline = None
            raise _Stop

    # -- output --------------------------------------------------------------------
    def send(self, request: Request, response: Response, *, now: float) -> None:
        """Queue the answer to ``request`` (answers go in the order requests came)."""
        self._waiting -= 1
        self._write(response, head_only=request.method == "HEAD",
                    close=not request.keep_alive or self._state is _State.CLOSED,
                    http10=request.version == "1.0")
        if self._waiting == 0 and self._state is _State.IDLE:
            self._deadline = now + self.limits.keepalive_timeout

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def _write(self, response: Response, *, head_only: bool, close: bool,
               http10: bool = False) -> None:
        out = self._out
        out += _block(response.status, response.headers)
        if self.date:
            out += b"Date: " + self.date + b"\r\n"
        out += b"Content-Length: %d\r\n" % len(response.body)
        if close:
            out += b"Connection: close\r\n"
        elif http10:
            out += b"Connection: keep-alive\r\n"
        out += b"\r\n"
        if not head_only:
            out += response.body

    def _refuse(self, status: int, reason: str) -> None:
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        self._deadline = None
        self._events.append(Refused(status, reason))
        self._write(Response(status, f"{status} {REASONS[status]}: {reason}\n".encode(),
                             (("Content-Type", "text/plain; charset=utf-8"),)),
                    head_only=False, close=True)

    # -- time ----------------------------------------------------------------------
    def get_timer(self) -> float | None:
        return None if self._state is _State.CLOSED else self._deadline

    def handle_timer(self, now: float) -> list[Event]:
        """Past the deadline: CLOSED and one ``TimedOut``; a head cut short gets a 408."""
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return []
        in_head = self._state is not _State.IDLE
        self._state = _State.CLOSED
        self._deadline = None
        if in_head:
            self._write(Response(408, b"408 Request Timeout\n",
                                 (("Content-Type", "text/plain; charset=utf-8"),)),
                        head_only=False, close=True)
            return [TimedOut("request head timed out")]
        return [TimedOut("keep-alive timed out")]
