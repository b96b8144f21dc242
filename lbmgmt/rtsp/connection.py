"""One RTSP/1.0 connection, sans-IO, parsed by ``httptools`` (llhttp).

``receive_data(bytes, now)`` returns events: ``RtspRequest`` (answer each with
``send``, in order), ``Refused`` (a bad or over-long request: its answer is
queued and the connection closes after it) and ``TimedOut``.
``data_to_send()`` hands out the bytes; once ``closed`` and drained, the glue
closes the transport.

RTSP/1.0 connections persist (RFC 2326 §1.4: no ``Connection`` header needed),
so llhttp's HTTP/1.0 keep-alive rule is turned off (``lenient_keep_alive``)
and the connection closes only when a request says ``Connection: close``, an
answer is sent with ``close=True`` (a redirect: the client goes elsewhere), or
on a refusal or timeout.

Budgets (``RtspLimits``): a request head has ``head_timeout`` from its first
byte (from the connection's start for the first one) and at most ``max_head``
bytes; a body (an ANNOUNCE's SDP) at most ``max_body`` bytes; between an
answer and the next request, ``idle_timeout``. Every request must carry one
``CSeq`` (400 otherwise), and only RTSP/1.0 is spoken (505 otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import httptools

from lbmgmt.rtmp.server import TimedOut

REASONS = {200: "OK", 301: "Moved Permanently", 302: "Moved Temporarily",
           400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Request Entity Too Large",
           414: "Request-URI Too Large", 454: "Session Not Found",
           455: "Method Not Valid in This State", 501: "Not Implemented",
           503: "Service Unavailable", 505: "RTSP Version Not Supported"}


@dataclass(frozen=True, slots=True)
class RtspLimits:
    head_timeout: float = 10.0  # seconds
    idle_timeout: float = 15.0  # seconds
    max_head: int = 8192  # bytes
    max_body: int = 65536  # bytes


@dataclass(frozen=True, slots=True)
class RtspRequest:
    method: str  # "OPTIONS", "DESCRIBE", …
    url: bytes  # as sent: "rtsp://host:554/live/s?x=1", or "*"
    cseq: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first header called ``name`` (any case), or None."""
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)


@dataclass(frozen=True, slots=True)
class RtspResponse:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    close: bool = False  # close the connection once this answer is written


@dataclass(frozen=True, slots=True)
class Refused:
    """The request cannot be answered; the status went out and the connection closes."""

    status: int
    reason: str


Event = RtspRequest | Refused | TimedOut

IDLE, HEAD, BODY, CLOSED = range(4)
_NO_PARSER = httptools.HttpRequestParser(object())  # a closed connection's (never fed)


class _Stop(Exception):
    """Raised in a parser callback to stop reading."""


class RtspConnection:
    def __init__(self, limits: RtspLimits, *, now: float, server: str = "lbmgmt") -> None:
        self.limits = limits
        self.server = server
        self._parser = httptools.HttpRequestParser(self)
        self._parser.set_dangerous_leniencies(lenient_keep_alive=True)
        self._state = IDLE
        self._deadline: float | None = now + limits.head_timeout
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._waiting = 0  # requests handed out and not yet answered
        self._close_after = False  # a request said Connection: close
        self.finished = False  # the last answer went out (a closing one): answer no more
        self.requests = 0

    @property
    def closed(self) -> bool:
        return self._state == CLOSED

    # -- input ---------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self._state == CLOSED or not data:
            return []
        before = self._state
        if before == IDLE:
            head = now + self.limits.head_timeout
            self._deadline = head if self._deadline is None else min(self._deadline, head)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):
                raise
        except httptools.HttpParserUpgrade:
            self._refuse(400, "upgrade is not RTSP")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"bad request: {exc}")
        if self._deadline is None and self._state in (HEAD, BODY):
            # a request began behind a complete one in this same feed: head_timeout from
            # now, as any other (else nothing would close it)
            self._deadline = now + self.limits.head_timeout
        if self._state == HEAD:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head:
                self._refuse(414 if not self._headers else 400, "request head too large")
        events, self._events = self._events, []
        return events

    def on_message_begin(self) -> None:
        if self._state == CLOSED:
            raise _Stop
        self._state = HEAD
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._head_bytes = 0
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_head:
            self._refuse(414, "request URL too long")
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if self._head_size + len(self._url) > self.limits.max_head:
            self._refuse(400, "request head too large")
            raise _Stop

    def on_headers_complete(self) -> None:
        length = next((v for n, v in self._headers if n.lower() == b"content-length"), b"0")
        if length.strip().isdigit() and int(length) > self.limits.max_body:
            self._refuse(413, "request body too large")  # said before a byte of it
            raise _Stop
        self._state = BODY

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.limits.max_body:
            self._refuse(413, "request body too large")
            raise _Stop
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        version = parser.get_http_version()
        cseqs = [v for n, v in self._headers if n.lower() == b"cseq"]
        if version != "1.0":
            self._refuse(505, f"RTSP/{version} is not spoken here (RTSP/1.0 is)")
            raise _Stop
        if len(cseqs) != 1 or not cseqs[0].strip().isdigit():
            self._refuse(400, "a request needs one numeric CSeq")
            raise _Stop
        connection = next((v for n, v in self._headers if n.lower() == b"connection"), b"")
        if connection.strip().lower() == b"close":
            self._close_after = True
        self.requests += 1
        self._waiting += 1
        self._events.append(RtspRequest(
            method=parser.get_method().decode("ascii", "replace"), url=self._url,
            cseq=cseqs[0].strip(), headers=self._headers, body=b"".join(self._body)))
        self._state = CLOSED if self._close_after else IDLE
        self._deadline = None  # until it is answered: then the idle deadline

    # -- output --------------------------------------------------------------------
    def send(self, request: RtspRequest, response: RtspResponse, *, now: float,
             date: bytes = b"") -> None:
        """Queue the answer to ``request``; ``date``: the Date header's value, if any.

        After a closing answer (a redirect) the requests read behind it in the same
        bytes get none: check ``finished`` before working one out."""
        self._waiting -= 1
        if self.finished:
            return
        close = response.close or self._close_after
        self._write(response, cseq=request.cseq, date=date, close=close)
        if close:
            self.finished = True
            self._state = CLOSED
            self._deadline = None
        elif self._waiting == 0 and self._state == IDLE:
            self._deadline = now + self.limits.idle_timeout

    def data_to_send(self) -> bytes:
        out, self._out = self._out, []
        return b"".join(out)

    def _write(self, response: RtspResponse, *, cseq: bytes | None, date: bytes = b"",
               close: bool) -> None:
        lines = [f"RTSP/1.0 {response.status} {REASONS.get(response.status, 'Unknown')}\r\n"
                 .encode("latin-1")]
        if cseq is not None:
            lines.append(b"CSeq: %s\r\n" % cseq)
        lines.append(f"Server: {self.server}\r\n".encode("latin-1"))
        if date:
            lines.append(b"Date: %s\r\n" % date)
        lines += [f"{name}: {value}\r\n".encode("latin-1") for name, value in response.headers]
        if response.body:
            lines.append(b"Content-Length: %d\r\n" % len(response.body))
        if close:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        lines.append(response.body)
        self._out.append(b"".join(lines))

    def _refuse(self, status: int, reason: str) -> None:
        if self._state == CLOSED:
            return
        # the CSeq, if the head got that far: a client matches the answer by it
        cseq = next((v.strip() for n, v in self._headers if n.lower() == b"cseq"
                     and v.strip().isdigit()), None)
        self._state = CLOSED
        self.finished = True
        self._deadline = None
        self._events.append(Refused(status, reason))
        self._write(RtspResponse(status, (("Content-Type", "text/plain; charset=utf-8"),),
                                 f"{status} {REASONS[status]}: {reason}\n".encode()),
                    cseq=cseq, close=True)

    def close(self) -> None:
        """The connection is gone: nothing more is read, and the parser let go."""
        self._state = CLOSED
        self._deadline = None
        self._parser = _NO_PARSER  # (it holds our callbacks: a cycle otherwise)

    # -- time ----------------------------------------------------------------------
    def get_timer(self) -> float | None:
        return None if self._state == CLOSED else self._deadline

    def handle_timer(self, now: float) -> list[Event]:
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return []
        in_head = self._state != IDLE
        self._state = CLOSED
        self._deadline = None
        if in_head:
            self._write(RtspResponse(408, (("Content-Type", "text/plain; charset=utf-8"),),
                                     b"408 Request Timeout\n"), cseq=None, close=True)
            return [TimedOut("request head timed out")]
        return [TimedOut("idle timed out")]
