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

from dataclasses import dataclass

import httptools

from lbmgmt.rtmp.server import TimedOut

SLICE = 4096  # the most the glue feeds at once (and per loop turn)

REASONS = {200: "OK", 204: "No Content", 302: "Found", 307: "Temporary Redirect",
           400: "Bad Request", 404: "Not Found",
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

    __slots__ = ("method", "target", "path", "query", "headers", "version", "keep_alive", "body")

    def __init__(self, method: str, target: bytes, path: bytes, query: bytes | None,
                 headers: list[tuple[bytes, bytes]], version: str, keep_alive: bool,
                 body: bytes = b"") -> None:
        self.method = method  # "GET", "HEAD", …
        self.target = target  # as sent: path and query, still percent-encoded
        self.path = path
        self.query = query  # None: no "?" at all
        self.headers = headers
        self.version = version  # "1.1", "1.0"
        self.keep_alive = keep_alive
        self.body = body  # at most HttpLimits.max_body bytes (RTMPT's, WHIP's offer)

    def header(self, name: bytes) -> bytes | None:
        """The first header called ``name`` (give it in lower case), or None."""
        return next((v for n, v in self.headers if n.lower() == name), None)

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


# status line + headers, by (status, id(headers)): the header sets are module constants,
# and the tuple kept beside the block proves the id is still that very object (a
# tuple's own hash would hash every string in it again, each time).
_BLOCKS: dict[tuple[int, int], tuple[tuple[tuple[str, str], ...], bytes]] = {}
_MAX_BLOCKS = 256


def _block(status: int, headers: tuple[tuple[str, str], ...]) -> bytes:
    cached = _BLOCKS.get((status, id(headers)))
    if cached is not None and cached[0] is headers:
        return cached[1]
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    block = "".join(lines).encode("latin-1")
    if len(_BLOCKS) < _MAX_BLOCKS:  # constant header sets; a Location is not kept
        _BLOCKS[(status, id(headers))] = (headers, block)
    return block


_METHODS: dict[bytes, str] = {}
_NO_PARSER = httptools.HttpRequestParser(object())  # a closed connection's (never fed)


# The connection's state: plain ints, compared on every byte fed (an Enum member
# costs a class attribute lookup through the metaclass each time, 0.1 µs).
IDLE = 0  # between requests (or before the first): no byte of a head yet
HEAD = 1
BODY = 2
CLOSED = 3  # nothing more is read; what is queued still goes out


class _Stop(Exception):
    """Raised in a parser callback to stop reading (a refusal, or after Connection: close)."""


class HttpConnection:
    # (slots: one per connection, made and dropped for every client)
    __slots__ = (
        "_again", "_again_data", "_body", "_body_parts", "_connection_header", "_deadline",
        "_events", "_head_began", "_head_bytes", "_head_size", "_headers", "_out", "_parser",
        "_state", "_url", "_waiting", "date_line", "limits", "requests"
    )

    def __init__(self, limits: HttpLimits, *, now: float) -> None:
        self.limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self._state = IDLE
        self._deadline: float | None = now + limits.head_timeout  # the first request's head
        # the message being read
        self._url = b""
        self._head_size = 0  # header fields, as "name: value\r\n"
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = 0
        self._body_parts: list[bytes] = []
        self._head_bytes = 0  # fed since this message's head began (per slice, see above)
        self._head_began = False  # during one feed: a new head began in it
        self._connection_header = False  # this message has one (see on_message_complete)
        # the last feed that was exactly one whole request, kept alive (receive_data)
        self._again_data = b""
        self._again: Event = Refused(0, "")  # (only read once _again_data is set)
        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._waiting = 0  # requests handed out and not yet answered
        self.requests = 0
        # the whole Date header line ("Date: …\r\n"), set by the glue; b"" for none
        self.date_line = b""

    @property
    def closed(self) -> bool:
        """No more input is read; close the transport once ``data_to_send`` is drained."""
        return self._state is CLOSED

    # -- input ---------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Events for ``data`` (at most ``SLICE`` bytes at once keeps the head count tight)."""
        state = self._state
        if state is CLOSED or not data:
            return []
        if state is IDLE and data == self._again_data:
            # The very bytes of the last feed, which were one whole keep-alive request
            # and nothing more: parsing from the same (idle) state gives that request
            # again. A player polling /loadbalancer sends the same bytes each time.
            self._deadline = None
            self.requests += 1
            self._waiting += 1
            return [self._again]
        if state is IDLE:
            # A head has head_timeout from its first byte, but never later than the
            # deadline already running: bytes between requests (llhttp skips blank
            # lines) must not buy a connection time.
            head = now + self.limits.head_timeout
            self._deadline = head if self._deadline is None else min(self._deadline, head)
        self._head_began = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):
                raise
        except httptools.HttpParserUpgrade:
            # llhttp stops after an Upgrade (or CONNECT) head: the request is answered as
            # a plain one, and nothing after it is read.
            self._state = CLOSED
            self._deadline = None
        except httptools.HttpParserError as exc:
            self._refuse(400, f"bad request: {exc}")
        if self._deadline is None and (self._state is HEAD or self._state is BODY):
            # a message began behind a complete one in this same feed: its head (or body)
            # gets head_timeout from now, as any other (else nothing would close it)
            self._deadline = now + self.limits.head_timeout
        if self._state is HEAD:
            # (a head that began before this feed was counted, unless in BODY before)
            self._head_bytes = len(data) if (self._head_began or state is BODY) else (
                self._head_bytes + len(data))
            if self._head_bytes > self.limits.max_head:
                if not self._headers:  # no header field complete: still the request line
                    self._refuse(414, "request line too long")
                else:
                    self._refuse(431, "request head too large")
        events, self._events = self._events, []
        if state is IDLE and self._state is IDLE and len(events) == 1:
            self._again_data, self._again = data, events[0]  # (see above)
        return events

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._state is CLOSED:
            raise _Stop
        self._state = HEAD
        self._url = b""
        self._head_size = 0
        self._headers = []
        self._body = 0
        self._body_parts = []
        self._head_began = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_head:
            self._refuse(414, "request line too long")
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if len(name) == 10 and name.lower() == b"connection":
            self._connection_header = True

    def on_headers_complete(self) -> None:
        if len(self._url) + self._head_size > self.limits.max_head:
            self._refuse(431, "request head too large")
            raise _Stop
        self._state = BODY

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > self.limits.max_body:
            self._refuse(413, "request body too large")
            raise _Stop
        self._body_parts.append(body)

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
        # get_http_version() formats a string (0.3 µs): a request kept alive with no
        # Connection header is HTTP/1.1 (llhttp keeps an older one alive only if asked).
        version = ("1.1" if keep_alive and not self._connection_header
                   else parser.get_http_version())
        self.requests += 1
        self._waiting += 1
        parts = self._body_parts
        self._events.append(Request(method, target, path, query_or_none, self._headers,
                                    version, keep_alive,
                                    (parts[0] if len(parts) == 1 else b"".join(parts))
                                    if parts else b""))
        if keep_alive:
            self._state = IDLE
            self._deadline = None  # until it is answered: then the keep-alive deadline
        else:
            # Answer this one, read nothing more: a next message's on_message_begin
            # stops the parser (not raised here: an exception through the parser costs
            # more than the rest of a request, and most such requests end the data).
            self._state = CLOSED
            self._deadline = None

    # -- output --------------------------------------------------------------------
    def send(self, request: Request, response: Response, *, now: float) -> None:
        """Queue the answer to ``request`` (answers go in the order requests came)."""
        self._waiting -= 1
        close = not request.keep_alive or self._state is CLOSED
        # (_write, inlined: this runs for every request)
        body, headers = response.body, response.headers
        cached = _BLOCKS.get((response.status, id(headers)))
        self._out.append(b"".join((
            cached[1] if cached is not None and cached[0] is headers
            else _block(response.status, headers),
            self.date_line,
            b"Content-Length: %d\r\n" % len(body),
            b"Connection: close\r\n\r\n" if close else (
                b"Connection: keep-alive\r\n\r\n" if request.version == "1.0" else b"\r\n"),
            b"" if request.method == "HEAD" else body)))
        if self._waiting == 0 and self._state is IDLE:
            self._deadline = now + self.limits.keepalive_timeout

    def data_to_send(self) -> bytes:
        out, self._out = self._out, []
        return b"".join(out)  # one answer: that very bytes object, no copy

    def _write(self, response: Response, *, head_only: bool, close: bool) -> None:
        """An answer of our own (a refusal, a timeout): closes the connection."""
        body = response.body
        self._out.append(b"".join((
            _block(response.status, response.headers),
            self.date_line,
            b"Content-Length: %d\r\n" % len(body),
            b"Connection: close\r\n\r\n" if close else b"\r\n",
            b"" if head_only else body)))

    def _refuse(self, status: int, reason: str) -> None:
        if self._state is CLOSED:
            return
        self._state = CLOSED
        self._deadline = None
        self._events.append(Refused(status, reason))
        self._write(Response(status, f"{status} {REASONS[status]}: {reason}\n".encode(),
                             (("Content-Type", "text/plain; charset=utf-8"),)),
                    head_only=False, close=True)

    def close(self) -> None:
        """The connection is gone: nothing more is read, and the parser is let go (it
        holds this object's callbacks: a reference cycle otherwise left for the
        garbage collector, which costs a connection's worth of work each time)."""
        self._state = CLOSED
        self._deadline = None
        self._parser = _NO_PARSER

    # -- time ----------------------------------------------------------------------
    def get_timer(self) -> float | None:
        return None if self._state is CLOSED else self._deadline

    def handle_timer(self, now: float) -> list[Event]:
        """Past the deadline: CLOSED and one ``TimedOut``; a head cut short gets a 408."""
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return []
        in_head = self._state is not IDLE
        self._state = CLOSED
        self._deadline = None
        if in_head:
            self._write(Response(408, b"408 Request Timeout\n",
                                 (("Content-Type", "text/plain; charset=utf-8"),)),
                        head_only=False, close=True)
            return [TimedOut("request head timed out")]
        return [TimedOut("keep-alive timed out")]
