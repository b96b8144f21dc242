"""The client port's HTTP, sans-IO: ``HttpConnection`` (httptools) and ``Answers``, time by hand.

Two in-memory peers: bytes in, the answers ``Answers`` gives (on a real core),
bytes out. No socket, no sleeping.
"""

from __future__ import annotations

import uuid

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbmgmt.balancer.config import HttpConfig
from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.front.answers import Answers, ServerInfoWanted, http_date
from lbmgmt.balancer.front.http import (SLICE, HttpConnection, HttpLimits, Refused, Request,
                                        Response)
from lbmgmt.rtmp.server import TimedOut
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey

KEY = SharedKey("front-http")
T0 = 500.0
WALL = 1_800_000_000.0
LIMITS = HttpLimits(head_timeout=10, keepalive_timeout=15, max_head=8192, max_body=1024)


def core_with_edge(address: str | None = "10.0.0.7:1935") -> BalancerCore:
    core = BalancerCore(KEY, timeout=5.0, grace=0.5, max_clock_skew=30.0)
    if address:
        sealer = ReportSealer(uuid.UUID(int=7))
        core.receive_datagram(sealer.seal(Report(EdgeState.RUNNING, address, 0, 2500), KEY,
                                          now=WALL), now=T0, wall=WALL)
    return core


class Peer:
    """An HttpConnection answered by Answers, as the glue does, minus the socket."""

    def __init__(self, core: BalancerCore | None = None, limits: HttpLimits = LIMITS,
                 **http: object) -> None:
        self.answers = Answers(core or core_with_edge(), HttpConfig(**http))  # type: ignore[arg-type]
        self.conn = HttpConnection(limits, now=T0)
        self.conn.date_line = b"Date: %s\r\n" % http_date(WALL)
        self.events: list[object] = []

    def feed(self, data: bytes, now: float = T0) -> bytes:
        for start in range(0, len(data), SLICE):
            self._handle(self.conn.receive_data(data[start:start + SLICE], now), now)
        return self.conn.data_to_send()

    def tick(self, now: float) -> bytes:
        self._handle(self.conn.handle_timer(now), now)
        return self.conn.data_to_send()

    def _handle(self, events: list, now: float) -> None:
        for event in events:
            self.events.append(event)
            if isinstance(event, Request):
                answer = self.answers.answer(event, now=now)
                if isinstance(answer, ServerInfoWanted):
                    answer = self.answers.server_info(b"<doc/>")
                self.conn.send(event, answer, now=now)


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Parse a stream of HTTP responses (httptools' response parser)."""
    out: list[tuple[int, dict[str, str], bytes]] = []

    class Sink:
        headers: dict[str, str]
        body: bytes

        def on_message_begin(self) -> None:
            self.headers, self.body = {}, b""

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers[name.decode().lower()] = value.decode("latin-1")

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            out.append((parser.get_status_code(), self.headers, self.body))

    sink = Sink()
    parser = httptools.HttpResponseParser(sink)
    parser.feed_data(raw)
    return out


def head_responses(raw: bytes) -> list[tuple[int, dict[str, str]]]:
    """Status and headers of responses without bodies (answers to HEAD)."""
    out = []
    for block in raw.split(b"\r\n\r\n")[:-1]:
        status_line, *lines = block.decode("latin-1").split("\r\n")
        out.append((int(status_line.split()[1]),
                    {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}))
    return out


GET = b"GET /loadbalancer HTTP/1.1\r\nHost: lb\r\n\r\n"


def test_loadbalancer_redirect_and_its_headers():
    [(status, headers, body)] = responses(Peer().feed(GET))
    assert (status, body) == (200, b"redirect=10.0.0.7:1935")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["access-control-allow-origin"] == "*"
    assert headers["date"] == "Fri, 15 Jan 2027 08:00:00 GMT" and "connection" not in headers


def test_no_edge_is_503_with_the_one_no_server_body():
    [(status, _, body)] = responses(Peer(core_with_edge(None)).feed(GET))
    assert (status, body) == (503, b"error=no available server")


def test_pipelined_requests_are_answered_in_order_on_one_connection():
    peer = Peer()
    raw = peer.feed(GET + b"GET /crossdomain.xml HTTP/1.1\r\n\r\n" + b"GET /x HTTP/1.1\r\n\r\n"
                    + b"HEAD /loadbalancer HTTP/1.1\r\n\r\n")
    *full, head = raw.split(b"HTTP/1.1 ")[1:]
    statuses = [int(part[:3]) for part in (*full, head)]
    assert statuses == [200, 200, 404, 200]
    assert b"cross-domain-policy" in raw and not peer.conn.closed
    assert peer.answers.core.redirects_served["http"] == 2


def test_head_gets_the_headers_and_length_of_get_without_a_body():
    raw = Peer().feed(b"HEAD /loadbalancer HTTP/1.1\r\n\r\n")
    [(status, headers)] = head_responses(raw)
    assert status == 200 and headers["content-length"] == str(len("redirect=10.0.0.7:1935"))
    assert raw.endswith(b"\r\n\r\n")


def test_connection_close_and_http_1_0_end_the_connection_after_the_answer():
    peer = Peer()
    raw = peer.feed(b"GET /loadbalancer HTTP/1.1\r\nConnection: close\r\n\r\n" + GET)
    [(status, headers, _)] = responses(raw)  # the pipelined second one is not read
    assert status == 200 and headers["connection"] == "close" and peer.conn.closed
    peer = Peer()
    [(_, headers, _)] = responses(peer.feed(b"GET /loadbalancer HTTP/1.0\r\n\r\n"))
    assert headers["connection"] == "close" and peer.conn.closed
    peer = Peer()
    raw = peer.feed(b"GET /loadbalancer HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert b"Connection: keep-alive" in raw and not peer.conn.closed


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /loadbalancer HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"DELETE /redirect/x HTTP/1.1\r\n\r\n", 405),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # TLS on the plain port
    (b"GET /loadbalancer HTTP/9.9\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
    (b"GET /loadbalancer HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000, 413),
])
def test_bad_requests_get_a_clear_status(request_bytes: bytes, status: int):
    peer = Peer()
    [(got, headers, _)] = responses(peer.feed(request_bytes))
    assert got == status
    if status == 405:
        assert headers["allow"] == "GET, HEAD"
    else:
        assert peer.conn.closed and headers["connection"] == "close"
        assert any(isinstance(e, Refused) and e.status == status for e in peer.events)


def test_an_over_long_request_line_is_414_and_over_long_headers_431():
    peer = Peer()
    [(status, _, _)] = responses(peer.feed(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"))
    assert status == 414 and peer.conn.closed
    peer = Peer()
    many = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
    [(status, _, _)] = responses(peer.feed(b"GET / HTTP/1.1\r\n" + many + b"\r\n"))
    assert status == 431 and peer.conn.closed


def test_an_upgrade_is_answered_as_a_plain_request_then_the_connection_ends():
    peer = Peer()
    raw = peer.feed(b"GET /loadbalancer HTTP/1.1\r\nUpgrade: websocket\r\n"
                    b"Connection: upgrade\r\n\r\n\x81\x85garbage" + GET)
    [(status, headers, _)] = responses(raw)
    assert status == 200 and headers["connection"] == "close" and peer.conn.closed


def test_a_head_under_the_limit_less_a_slice_is_always_taken():
    headers = b"X-Big: " + b"v" * (LIMITS.max_head - SLICE - 100) + b"\r\n"
    for pipelined in (b"", GET):  # also when it starts inside another request's slice
        peer = Peer()
        raw = peer.feed(pipelined + b"GET /loadbalancer HTTP/1.1\r\n" + headers + b"\r\n")
        assert [s for s, _, _ in responses(raw)] == [200] * (2 if pipelined else 1)


def test_a_slowloris_head_times_out_from_its_first_byte_whatever_it_trickles():
    peer = Peer()
    assert peer.conn.get_timer() == T0 + 10  # the first head: from the connection's start
    for i, byte in enumerate(b"GET /loadbalancer HTTP/1.1\r\nX: "):
        assert peer.feed(bytes([byte]), now=T0 + i * 0.3) == b""
        assert peer.conn.get_timer() == T0 + 10
    assert peer.tick(T0 + 9.99) == b""
    [(status, headers, _)] = responses(peer.tick(T0 + 10))
    assert status == 408 and headers["connection"] == "close" and peer.conn.closed
    assert TimedOut("request head timed out") in peer.events


def test_keep_alive_idle_times_out_and_blank_lines_buy_no_time():
    peer = Peer()
    peer.feed(GET, now=T0 + 1)
    assert peer.conn.get_timer() == T0 + 1 + 15
    peer.feed(b"\r\n", now=T0 + 10)  # llhttp skips it; the deadline may only come closer
    assert peer.conn.get_timer() == T0 + 16
    assert peer.tick(T0 + 16) == b""  # idle: closed without a word
    assert peer.conn.closed and TimedOut("keep-alive timed out") in peer.events


def test_the_next_head_has_its_own_timeout_from_its_first_byte():
    peer = Peer()
    peer.feed(GET, now=T0 + 1)
    peer.feed(b"GET /load", now=T0 + 12)
    assert peer.conn.get_timer() == T0 + 16  # min(keep-alive deadline, 12 + 10)
    peer = Peer()
    peer.feed(GET, now=T0 + 1)
    peer.feed(b"GET /load", now=T0 + 2)
    assert peer.conn.get_timer() == T0 + 12


@pytest.mark.parametrize("path, location", [
    (b"/redirect/live/s.m3u8?token=a%20b&x=1", "http://10.0.0.7:1935/live/s.m3u8?token=a%20b&x=1"),
    (b"/redirect/a%0D%0ASet-Cookie:x/b", "http://10.0.0.7:1935/a%0D%0ASet-Cookie:x/b"),
    (b"/redirect/", "http://10.0.0.7:1935/"),
    (b"/redirect/x?", "http://10.0.0.7:1935/x"),
])
def test_redirect_302_keeps_path_and_query_byte_for_byte(path: bytes, location: str):
    [(status, headers, _)] = responses(Peer().feed(b"GET " + path + b" HTTP/1.1\r\n\r\n"))
    assert status == 302 and headers["location"] == location


def test_server_info_is_asked_of_the_glue_and_can_be_switched_off():
    answers = Answers(core_with_edge(), HttpConfig())
    request = Request("GET", b"/loadbalancer?serverInfoXML", b"/loadbalancer", b"serverInfoXML",
                      [], "1.1", True)
    assert isinstance(answers.answer(request, now=T0), ServerInfoWanted)
    off = Answers(core_with_edge(), HttpConfig(enable_server_info_xml=False))
    answer = off.answer(request, now=T0)
    assert isinstance(answer, Response) and answer.status == 404
    other = Request("GET", b"/loadbalancer?x=serverInfoXML", b"/loadbalancer",
                    b"x=serverInfoXML", [], "1.1", True)
    answer = answers.answer(other, now=T0)
    assert isinstance(answer, Response) and answer.status == 200  # a value is not the key


VALID = [GET, b"HEAD /loadbalancer HTTP/1.1\r\n\r\n", b"GET /crossdomain.xml HTTP/1.1\r\n\r\n",
         b"GET /redirect/live/x.m3u8?t=1 HTTP/1.1\r\nHost: lb\r\nUser-Agent: p\r\n\r\n",
         b"GET /nope HTTP/1.1\r\n\r\n", b"GET /loadbalancer?serverInfoXML HTTP/1.1\r\n\r\n",
         b"GET /loadbalancer HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
         b"GET /loadbalancer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"]


@settings(max_examples=300, deadline=None)
@given(requests=st.lists(st.sampled_from(VALID), min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_every_split_of_valid_requests_gives_the_same_answers(requests, cuts):
    data = b"".join(requests)
    whole = Peer().feed(data)
    peer = Peer()
    out = bytearray()
    start = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        out += peer.feed(data[start:cut])
        start = cut
    assert bytes(out) == whole
    assert whole.count(b"HTTP/1.1 ") == len(requests)  # one answer each, none refused
    assert not peer.conn.closed


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_give_answers_or_a_refusal_never_an_exception(data):
    peer = Peer()
    peer.feed(data)
    peer.tick(T0 + 100)
    assert peer.conn.closed or not data or all(not isinstance(e, Refused) for e in peer.events)


class Unremembering(HttpConnection):
    """An HttpConnection that parses every feed afresh (no repeated-request shortcut)."""

    def receive_data(self, data: bytes, now: float) -> list:  # type: ignore[override]
        self._again_data = b""  # (never equal to a feed: empty ones return first)
        return super().receive_data(data, now)


@settings(max_examples=300, deadline=None)
def _cut(request: bytes) -> st.SearchStrategy[tuple[bytes, bytes]]:
    return st.integers(1, len(request) - 1).map(lambda cut: (request[:cut], request[cut:]))


@given(groups=st.lists(st.one_of(
    st.sampled_from(VALID).map(lambda r: [r]),  # whole requests, repeated: the shortcut's
    st.lists(st.sampled_from(VALID), min_size=2, max_size=3).map(  # pipelined
        lambda rs: [b"".join(rs)]),
    st.sampled_from(VALID).flatmap(_cut).flatmap(  # split: start, end, and the end again
        lambda parts: st.sampled_from([[parts[0]], [parts[1]], [parts[0], parts[1], parts[1]],
                                       [parts[0], parts[1]]])),
    st.just([b"GET /loadbalancer HTTP/1.1\r\nConnection: close\r\n\r\n"]),
    st.just([b"\r\n"])), max_size=8))
def test_a_repeated_request_gets_the_answer_parsing_it_again_would(groups):
    feeds = [data for group in groups for data in group]
    remembering, parsing = Peer(), Peer()
    parsing.conn = Unremembering(LIMITS, now=T0)
    parsing.conn.date_line = remembering.conn.date_line
    for data in feeds:
        assert remembering.feed(data) == parsing.feed(data)
        assert remembering.conn.closed == parsing.conn.closed
        assert remembering.conn.get_timer() == parsing.conn.get_timer()
    assert [repr(e) for e in remembering.events] == [repr(e) for e in parsing.events]
    assert remembering.conn.requests == parsing.conn.requests


def test_a_head_begun_behind_a_whole_request_in_one_feed_has_the_head_timeout():
    # (found by an attack: it had no deadline at all, and held its connection for ever)
    peer = Peer()
    out = peer.feed(b"GET /loadbalancer HTTP/1.1\r\nHost: x\r\n\r\nGET /loadb", now=T0 + 1)
    assert out.startswith(b"HTTP/1.1 200") and peer.conn.get_timer() == T0 + 1 + 10
    assert peer.tick(T0 + 11).startswith(b"HTTP/1.1 408")
    body = Peer()  # a next request's body that never comes: the same
    body.feed(b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nab", now=T0)
    assert body.conn.get_timer() == T0 + 10
