"""RTSP, WHIP/WHEP and RTMPT on the client port, sans-IO, and the edge URL rules.

Two in-memory peers each time: bytes (or requests) in, what the balancer's
core decides, bytes out; time passed by hand. The real clients (ffmpeg,
GStreamer, curl) play the same through real daemons in tests/e2e/test_protocols.py.
"""

from __future__ import annotations

from collections import Counter

import httptools
import pytest

from lbmgmt.balancer.config import HttpConfig, WebRtcConfig
from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.front.answers import Answers
from lbmgmt.balancer.front.http import Request
from lbmgmt.balancer.front.rtmp_apps import edge_url
from lbmgmt.balancer.front.rtmpt import RtmptSessions
from lbmgmt.balancer.front.rtsp import COUNTERS, RtspAnswers, split_rtsp_url
from lbmgmt.balancer.rtmp_config import RtmpApp, RtmpConfig
from lbmgmt.balancer.rtsp_config import RtspApp, RtspConfig
from lbmgmt.rtmp.client import ClientConnection
from lbmgmt.rtmp.server import CommandReceived, HandshakeCompleted, TimedOut
from lbmgmt.rtsp.connection import Refused, RtspConnection, RtspLimits, RtspRequest
from tests.unit.test_front_http import T0, core_with_edge

LIMITS = RtspLimits(head_timeout=10, idle_timeout=15, max_head=2048, max_body=1024)


class RtspPeer:
    """An RtspConnection answered by RtspAnswers, as the glue does, minus the socket."""

    def __init__(self, core: BalancerCore | None = None, config: RtspConfig | None = None,
                 client_port: int | None = 554) -> None:
        self.core = core or core_with_edge()
        self.counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self.answers = RtspAnswers(self.core, config or RtspConfig(), self.counters)
        self.conn = RtspConnection(LIMITS, now=T0)
        self.client_port = client_port
        self.events: list[object] = []

    def feed(self, data: bytes, now: float = T0) -> list[tuple[int, dict[str, str], bytes]]:
        self._handle(self.conn.receive_data(data, now), now)
        return answers(self.conn.data_to_send())

    def tick(self, now: float) -> list[tuple[int, dict[str, str], bytes]]:
        self._handle(self.conn.handle_timer(now), now)
        return answers(self.conn.data_to_send())

    def _handle(self, events: list, now: float) -> None:
        for event in events:
            self.events.append(event)
            if isinstance(event, RtspRequest) and not self.conn.finished:
                self.conn.send(event, self.answers.answer(event, now=now,
                                                          client_port=self.client_port),
                               now=now)


def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """RTSP answers, one after another, each head then Content-Length bytes of body."""
    out: list[tuple[int, dict[str, str], bytes]] = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"RTSP/1.0 "), lines[0]
        headers = {k.decode().lower(): v.decode("latin-1").strip()
                   for k, _, v in (line.partition(b":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), headers, raw[:length]))
        raw = raw[length:]
    return out


def request(method: str, url: str = "rtsp://lb:554/live/s", cseq: int = 1,
            extra: str = "") -> bytes:
    return f"{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}\r\n".encode()


# -- RTSP: what each request gets ------------------------------------------------------
def test_options_gets_200_and_describe_the_302_with_an_absolute_location_then_close():
    peer = RtspPeer()
    [(status, headers, _)] = peer.feed(request("OPTIONS", cseq=1))
    assert status == 200 and headers["cseq"] == "1"
    assert headers["public"] == "OPTIONS, DESCRIBE, ANNOUNCE, SETUP"
    assert not peer.conn.closed  # rtspsrc sends DESCRIBE on this same connection
    [(status, headers, _)] = peer.feed(request("DESCRIBE", "rtsp://lb:554/live/s?token=a%20b",
                                               cseq=2))
    assert status == 302 and headers["cseq"] == "2"
    assert headers["location"] == "rtsp://10.0.0.7:1935/live/s?token=a%20b"
    assert headers["connection"] == "close" and peer.conn.closed
    assert peer.feed(request("DESCRIBE", cseq=3)) == []  # nothing is read after it
    assert peer.counters["redirected"] == 1 and peer.core.redirects_served["rtsp"] == 1


@pytest.mark.parametrize("method", ["ANNOUNCE", "SETUP"])
def test_announce_and_setup_are_redirected_too(method: str):
    peer = RtspPeer(core_with_edge("10.0.0.9"))  # no port in the address: the client's
    body = "v=0\r\n" if method == "ANNOUNCE" else ""
    extra = f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n" if body else ""
    [(status, headers, _)] = peer.feed(request(method, "rtsp://lb/live/s/trackID=0", 7,
                                               extra) + body.encode())
    assert (status, headers["location"]) == (302, "rtsp://10.0.0.9:554/live/s/trackID=0")


def test_pipelined_requests_are_answered_in_order_with_their_cseqs():
    peer = RtspPeer()
    got = peer.feed(request("OPTIONS", cseq=5) + request("DESCRIBE", cseq=6)
                    + request("OPTIONS", cseq=7))
    assert [(s, h["cseq"]) for s, h, _ in got] == [(200, "5"), (302, "6")]
    assert peer.core.redirects_served["rtsp"] == 1  # nothing worked out behind the 302


def test_redirect_port_and_scheme_and_apps_rewrite_the_location():
    config = RtspConfig(redirect_port=8554, redirect_scheme="rtsps",
                        apps={"redirect": RtspApp("redirect", "live")})
    peer = RtspPeer(config=config)
    [(status, headers, _)] = peer.feed(request("DESCRIBE", "rtsp://lb/redirect/cam?x=1"))
    assert (status, headers["location"]) == (302, "rtsps://10.0.0.7:8554/live/cam?x=1")
    other = RtspPeer(config=config)
    [(status, _, _)] = other.feed(request("DESCRIBE", "rtsp://lb/nope/cam"))
    assert status == 404 and other.counters["not_found"] == 1
    assert not other.conn.closed  # a client may ask again


def test_no_edge_is_503_and_session_methods_455_and_the_rest_501():
    peer = RtspPeer(core_with_edge(None))
    got = peer.feed(request("DESCRIBE", cseq=1) + request("PLAY", cseq=2)
                    + request("REDIRECT", cseq=3))
    assert [s for s, _, _ in got] == [503, 455, 501]
    assert (peer.counters["no_server"], peer.counters["not_valid"],
            peer.counters["not_implemented"]) == (1, 1, 1)


@pytest.mark.parametrize("raw,status", [
    (b"DESCRIBE rtsp://lb/s RTSP/1.0\r\n\r\n", 400),  # no CSeq
    (b"DESCRIBE rtsp://lb/s RTSP/1.0\r\nCSeq: 1\r\nCSeq: 2\r\n\r\n", 400),
    (b"DESCRIBE rtsp://lb/s RTSP/1.0\r\nCSeq: x\r\n\r\n", 400),
    (b"DESCRIBE rtsp://lb/s RTSP/2.0\r\nCSeq: 1\r\n\r\n", 505),
    (b"$\x00\x00\x04abcd", 400),  # interleaved data before any request
    (b"ANNOUNCE rtsp://lb/s RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 2000\r\n\r\n", 413),
    (b"DESCRIBE rtsp://lb/" + b"a" * 3000 + b" RTSP/1.0\r\n", 414),
    (b"DESCRIBE rtsp://lb/s RTSP/1.0\r\nCSeq: 1\r\nX-A: " + b"a" * 3000, 400),
])
def test_bad_or_oversized_requests_get_a_clear_answer_and_the_connection_closes(raw, status):
    peer = RtspPeer()
    got = peer.feed(raw)
    assert [s for s, _, _ in got] == [status] and peer.conn.closed
    assert isinstance(peer.events[-1], Refused)
    assert peer.core.redirects_served["rtsp"] == 0


def test_a_refusal_carries_the_cseq_when_the_head_got_that_far():
    peer = RtspPeer()
    [(status, headers, _)] = peer.feed(
        b"ANNOUNCE rtsp://lb/s RTSP/1.0\r\nCSeq: 9\r\nContent-Length: 5000\r\n\r\n")
    assert status == 413 and headers["cseq"] == "9"


def test_a_slow_head_gets_408_and_an_idle_connection_is_closed():
    peer = RtspPeer()
    peer.feed(b"OPTIONS rtsp://lb/ RTSP/1.0\r\nCSe", now=T0 + 1)
    assert peer.conn.get_timer() == T0 + 10  # from the connection's start: no extension
    assert peer.tick(T0 + 9.9) == []
    [(status, _, _)] = peer.tick(T0 + 10)
    assert status == 408 and peer.conn.closed and peer.events[-1] == TimedOut(
        "request head timed out")
    idle = RtspPeer()
    idle.feed(request("OPTIONS"), now=T0 + 2)
    assert idle.conn.get_timer() == T0 + 2 + 15
    assert idle.tick(T0 + 17) == [] and idle.conn.closed
    assert idle.events[-1] == TimedOut("idle timed out")


def test_a_request_begun_behind_a_whole_one_in_one_feed_has_the_head_timeout():
    peer = RtspPeer()
    [(status, _, _)] = peer.feed(request("OPTIONS") + b"O", now=T0 + 1)
    assert status == 200 and peer.conn.get_timer() == T0 + 1 + 10
    [(status, _, _)] = peer.tick(T0 + 11)
    assert status == 408 and peer.conn.closed


def test_connection_close_from_the_client_is_honoured():
    peer = RtspPeer()
    [(status, headers, _)] = peer.feed(request("OPTIONS", extra="Connection: close\r\n"))
    assert status == 200 and headers["connection"] == "close" and peer.conn.closed


def test_rtsp_urls_split_to_path_and_query():
    assert split_rtsp_url(b"rtsp://h:554/a/b?x=1#f") == (b"/a/b", b"x=1")
    assert split_rtsp_url(b"RTSP://h") == (b"/", None)
    assert split_rtsp_url(b"/a?") == (b"/a", b"")
    assert split_rtsp_url(b"rtsp://h?q=1") == (b"/", b"q=1")  # no path: the query stays
    assert split_rtsp_url(b"*") is None and split_rtsp_url(b"http://h/a") is None


def test_httptools_reads_rtsp_answers_too():
    # (lbmgmt resolve parses the balancer's 302 with it)
    class Sink:
        location = b""

        def on_header(self, name: bytes, value: bytes) -> None:
            if name == b"Location":
                self.location = value
    sink = Sink()
    parser = httptools.HttpResponseParser(sink)
    peer = RtspPeer()
    peer.feed(request("DESCRIBE"))
    parser.feed_data(b"RTSP/1.0 302 Moved Temporarily\r\nCSeq: 1\r\n"
                     b"Location: rtsp://e/s\r\n\r\n")
    assert parser.get_status_code() == 302 and sink.location == b"rtsp://e/s"


# -- WHIP/WHEP ----------------------------------------------------------------------------
def post(path: bytes, method: str = "POST", body: bytes = b"v=0\r\n") -> Request:
    path_part, _, query = path.partition(b"?")
    return Request(method, path, path_part, query or None, [], "1.1", True, body)


def test_whip_and_whep_posts_get_a_307_to_the_edge_resource_with_cors():
    answers = Answers(core_with_edge("10.0.0.7"), HttpConfig(), WebRtcConfig())
    whip = answers.answer(post(b"/whip/live/cam?token=t"), now=T0, local_port=8080)
    headers = dict(whip.headers)  # type: ignore[union-attr]
    assert whip.status == 307  # type: ignore[union-attr]
    assert headers["Location"] == "http://10.0.0.7:8080/live/cam/whip?token=t"
    assert headers["Access-Control-Expose-Headers"] == "Location"
    assert headers["Access-Control-Allow-Origin"] == "*"
    whep = answers.answer(post(b"/whep/live/cam"), now=T0, local_port=8080)
    assert dict(whep.headers)["Location"] == "http://10.0.0.7:8080/live/cam/whep"  # type: ignore[union-attr]
    assert answers.webrtc_counters["whip"] == 1 and answers.webrtc_counters["whep"] == 1
    assert answers.core.redirects_served["whip"] == 1


def test_webrtc_templates_ports_and_refusals():
    config = WebRtcConfig(redirect_scheme="https", redirect_port=443,
                          whep_path="/rtc/v1/whep/?app=live&stream={path}")
    answers = Answers(core_with_edge("10.0.0.7:1935"), HttpConfig(), config)
    whep = answers.answer(post(b"/whep/cam"), now=T0)
    assert dict(whep.headers)["Location"] == (  # type: ignore[union-attr]
        "https://10.0.0.7:443/rtc/v1/whep/?app=live&stream=cam")
    preflight = answers.answer(post(b"/whip/cam", "OPTIONS", b""), now=T0)
    pre = dict(preflight.headers)  # type: ignore[union-attr]
    assert preflight.status == 200 and "Authorization" in pre["Access-Control-Allow-Headers"]  # type: ignore[union-attr]
    assert "POST" in pre["Access-Control-Allow-Methods"]
    get = answers.answer(post(b"/whip/cam", "GET"), now=T0)
    assert get.status != 307  # a GET is not a WHIP request  # type: ignore[union-attr]
    put = answers.answer(post(b"/whip/cam", "PUT"), now=T0)
    assert put.status == 405 and dict(put.headers)["Allow"] == "POST, OPTIONS"  # type: ignore[union-attr]
    assert answers.webrtc_counters["not_allowed"] == 1
    assert answers.answer(post(b"/whip/"), now=T0).status == 404  # type: ignore[union-attr]
    empty = Answers(core_with_edge(None), HttpConfig(), config)
    refused = empty.answer(post(b"/whip/cam"), now=T0)
    assert refused.status == 503  # type: ignore[union-attr]
    assert dict(refused.headers)["Access-Control-Allow-Origin"] == "*"  # type: ignore[union-attr]


def test_an_edge_address_in_unicode_goes_out_as_idna_and_junk_percent_encoded():
    # (found by an attack: a non-Latin-1 address made every redirect a traceback)
    answers = Answers(core_with_edge("例え.example:8554"), HttpConfig(), WebRtcConfig())
    whep = answers.answer(post(b"/whep/cam"), now=T0)
    assert dict(whep.headers)["Location"] == (  # type: ignore[union-attr]
        "http://xn--r8jz45g.example:8554/cam/whep")
    found = answers.answer(Request("GET", b"/redirect/a", b"/redirect/a", None, [], "1.1", True),
                           now=T0)
    assert dict(found.headers)["Location"] == "http://xn--r8jz45g.example:8554/a"  # type: ignore[union-attr]
    peer = RtspPeer(core_with_edge("bad@host/x?y#z"))
    [(status, headers, _)] = peer.feed(request("DESCRIBE", "rtsp://lb/s"))
    assert headers["location"] == "rtsp://bad%40host%2Fx%3Fy%23z:554/s"


# -- RTMPT ---------------------------------------------------------------------------------
class Tunnel:
    """An RTMP client speaking through RtmptSessions, as ffmpeg's rtmpt does."""

    def __init__(self, sessions: RtmptSessions, port: int = 80) -> None:
        self.sessions = sessions
        self.port = port
        self.seq = 0

    def post(self, path: str, body: bytes = b"\x00", now: float = T0,
             address: str = "192.0.2.1"):
        return self.sessions.answer(post(path.encode(), body=body), now=now,
                                    local_port=self.port, address=address)

    def open(self) -> str:
        answer = self.post("/open/1")
        assert answer.status == 200 and answer.body.endswith(b"\n")
        return answer.body.strip().decode()

    def exchange(self, session: str, kind: str, body: bytes = b"\x00") -> bytes:
        answer = self.post(f"/{kind}/{session}/{self.seq}", body)
        self.seq += 1
        assert answer.status == 200, answer.body
        assert answer.body[:1] == b"\x01"  # the polling interval comes first
        return answer.body[1:]


def rtmpt(core: BalancerCore | None = None, apps: dict[str, RtmpApp] | None = None,
          **limits: float) -> RtmptSessions:
    config = RtmpConfig(apps=apps) if apps is not None else RtmpConfig()
    return RtmptSessions(core or core_with_edge("10.0.0.7:1935"), config, Counter(),
                         Counter(), max_sessions=int(limits.get("max_sessions", 4)),
                         per_address=int(limits.get("per_address", 16)),
                         timeout=limits.get("timeout", 30.0),
                         max_bytes=int(limits.get("max_bytes", 65536)))


def connect_through(tunnel: Tunnel, app: str = "redirect") -> list:
    session = tunnel.open()
    client = ClientConnection()
    commands = []
    reply = tunnel.exchange(session, "send", client.data_to_send())
    for event in client.receive_data(reply):
        if isinstance(event, HandshakeCompleted):
            client.connect(app, f"rtmpt://lb:{tunnel.port}/{app}")
    reply = tunnel.exchange(session, "send", client.data_to_send())
    for event in client.receive_data(reply):
        if isinstance(event, CommandReceived):
            commands.append(event.command)
    assert tunnel.post(f"/close/{session}/{tunnel.seq}").body == b"\x00"
    return commands


def test_an_rtmpt_connect_to_the_redirect_app_gets_the_edge_on_the_clients_port():
    sessions = rtmpt()
    [error] = connect_through(Tunnel(sessions, port=80))
    assert error.name == "_error"
    # rtmpt stays rtmpt, and the port is the one the client came through, not the
    # RTMP port in the edge's address
    assert error.args[0]["ex"]["redirect"] == "rtmpt://10.0.0.7:80/live"
    assert sessions.rtmp_counters["redirected"] == 1
    assert sessions.core.redirects_served["rtmpt"] == 1
    assert len(sessions) == 0 and sessions.counters["sessions"] == 1


def test_rtmpt_refuses_proxy_apps_and_unknown_sessions():
    sessions = rtmpt(apps={"live": RtmpApp("live", mode="proxy")})
    [error] = connect_through(Tunnel(sessions), app="live")
    assert "relays RTMP only" in error.args[0]["description"]
    tunnel = Tunnel(sessions)
    assert tunnel.post("/idle/nope/0").status == 404
    assert tunnel.post("/fcs/ident2").status == 404
    assert sessions.counters["unknown_session"] == 1


def test_rtmpt_sessions_are_bounded_in_number_time_and_bytes():
    sessions = rtmpt(max_sessions=2, timeout=30.0, max_bytes=4000)
    tunnel = Tunnel(sessions)
    first, second = tunnel.open(), tunnel.open()
    tunnel.post(f"/idle/{first}/0")  # used: the second is now the least recent
    third = tunnel.open()
    assert set(s.decode() for s in sessions.sessions) == {first, third}
    assert sessions.counters["evicted"] == 1 and second not in str(sessions.sessions)
    # 30 s without a request: gone at the next request, whoever makes it
    assert tunnel.post("/open/1", now=T0 + 31).status == 200
    assert sessions.counters["expired"] == 2
    big = tunnel.open()
    assert tunnel.post(f"/send/{big}/0", b"\x03" + bytes(5000)).status == 400
    assert sessions.counters["too_large"] == 1 and big.encode() not in sessions.sessions


def test_one_address_cannot_push_out_anyone_elses_rtmpt_sessions():
    sessions = rtmpt(max_sessions=100, per_address=3)
    tunnel = Tunnel(sessions)
    victim = tunnel.post("/open/1", address="192.0.2.9").body.strip().decode()
    opened = [tunnel.post("/open/1", address="203.0.113.5").body.strip() for _ in range(50)]
    assert sessions.counters["evicted"] == 47  # the attacker's own, oldest first
    assert set(sessions.by_address["203.0.113.5"]) == set(opened[-3:])
    assert tunnel.post(f"/idle/{victim}/0", address="192.0.2.9").status == 200
    # a session is its opener's: the same id from another address is unknown
    assert tunnel.post(f"/idle/{victim}/1", address="203.0.113.5").status == 404


# -- edge URL rules ------------------------------------------------------------------------
@pytest.mark.parametrize("app,address,scheme,port,url", [
    (RtmpApp("r"), "e:1935", "rtmp", 1935, "rtmp://e:1935/live"),
    (RtmpApp("r"), "e", "rtmp", 1940, "rtmp://e:1940/live"),  # no port: the client's
    (RtmpApp("r"), "e:21001", "rtmpt", 80, "rtmpt://e:80/live"),  # tunnelled: the client's
    (RtmpApp("r"), "e", "rtmpt", None, "rtmpt://e/live"),
    (RtmpApp("r", redirect_port=8080), "e:21001", "rtmpt", 80, "rtmpt://e:8080/live"),
    (RtmpApp("r", redirect_scheme="rtmp"), "e:21001", "rtmpt", 80, "rtmp://e:21001/live"),
])
def test_the_edge_url_keeps_what_the_client_used_unless_told(app, address, scheme, port, url):
    assert edge_url(app, address, client_scheme=scheme, client_port=port) == url


# -- suspect edges -------------------------------------------------------------------------
def test_a_suspect_edge_gets_no_client_until_its_time_is_up():
    core = core_with_edge("10.0.0.7:1935")
    [entry] = list(core.registry)
    core.unreachable(entry, T0, suspect_for=5.0, protocol="rtmp", error="refused")
    assert core.redirect("http", T0 + 1) is None
    [row] = core.status(T0 + 1).servers
    assert row.suspect_for == 4.0 and not row.available  # (listServers' suspectMs)
    assert not core.registry.is_available(entry, T0 + 4.9)
    assert core.registry.is_available(entry, T0 + 5.0)
    core.redirector.updated(entry)  # (its next report puts it back in the index)
    assert core.redirect("http", T0 + 5.0) is entry


# -- config ------------------------------------------------------------------------------
def load(tmp_path, text: str):
    from lbmgmt.balancer.config import load_balancer_config
    path = tmp_path / "balancer.toml"
    path.write_text('[balancer]\nkey = "k-0123456789abcdef"\nstate_file = ""\n' + text)
    return load_balancer_config(path)


def test_the_client_port_takes_one_listen_address_or_several(tmp_path):
    from lbmgmt.endpoints import Endpoint
    assert load(tmp_path, '[http]\nlisten = "*:8080"\n').http.listen == (Endpoint("", 8080),)
    cfg = load(tmp_path, '[http]\nlisten = ["*:1935", "127.0.0.1:80"]\n'
                         '[rtsp]\nlisten = ["*"]\nredirect_port = 8554\n'
                         '[rtsp.apps.redirect]\nredirect_app_name = "live"\n'
                         '[webrtc]\nwhep_path = "/rtc/{path}"\n')
    assert cfg.http.listen == (Endpoint("", 1935), Endpoint("127.0.0.1", 80))
    assert cfg.rtsp.listen == (Endpoint("", 554),) and cfg.rtsp.redirect_port == 8554
    assert cfg.rtsp.apps == {"redirect": RtspApp("redirect", "live")}
    assert cfg.webrtc.whep_path == "/rtc/{path}"


@pytest.mark.parametrize("text,field,words", [
    ('[http]\nlisten = []\n', "http.listen", "non-empty list"),
    ('[http]\nlisten = ["*:1935", 80]\n', "http.listen", "non-empty list"),
    ('[http]\nlisten = ["*:1935", "*:99999"]\n', "http.listen", "bad port"),
    ('[http]\nlisten = ["*:1935", "*:1935"]\n', "http.listen", "twice"),
    ('[rtsp]\nredirect_scheme = "http"\n', "rtsp.redirect_scheme", "rtsp, rtsps"),
    ('[rtsp.apps.redirect]\nredirect_app_name = "/live"\n', "rtsp.apps.redirect.redirect_app_name",
     "leading"),
    ('[webrtc]\nwhip_path = "/whip"\n', "webrtc.whip_path", "{path}"),
    ('[webrtc]\nredirect_scheme = "ws"\n', "webrtc.redirect_scheme", "http or https"),
])
def test_client_port_config_errors_name_the_field(tmp_path, text: str, field: str, words: str):
    from lbmgmt.configfile import ConfigError
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.field == field and words in str(caught.value)


# -- lbmgmt resolve rtsp:// ---------------------------------------------------------------
async def answering(answer: bytes):
    """A one-shot server that reads a request head and writes ``answer``."""
    import asyncio

    async def serve(reader, writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()
    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize("answer,error", [
    (b"RTSP/1.0 302 Found\r\nCSeq: 1\r\nLocation: -y\r\n\r\n", "not an absolute"),
    (b"RTSP/1.0 302 Found\r\nCSeq: 1\r\nLocation: file:///etc/passwd\r\n\r\n", "not an absolute"),
    (b"RTSP/1.0 302 Found\r\nCSeq: 1\r\nLocation: /relative\r\n\r\n", "not an absolute"),
    (b"HTTP/1.1 302 Found\r\nLocation: rtsp://e/s\r\n\r\n", "gave no redirect"),
    (b"RTSP/1.0 404 Not Found\r\nCSeq: 1\r\n\r\n", "RTSP 404"),
])
async def test_resolve_takes_only_an_absolute_rtsp_location(answer: bytes, error: str):
    # (what it prints goes on a player's command line: "-y" would be an option)
    from lbmgmt.resolve import ResolveError, resolve
    server = await answering(answer)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ResolveError, match=error):
            await resolve(f"rtsp://127.0.0.1:{port}/live/s", timeout=30)
    finally:
        server.close()


async def test_resolve_prints_the_rtsp_location():
    from lbmgmt.resolve import resolve
    server = await answering(b"RTSP/1.0 302 Moved Temporarily\r\nCSeq: 1\r\n"
                             b"Location: rtsp://10.0.0.7:8554/live/s?t=1\r\n\r\n")
    port = server.sockets[0].getsockname()[1]
    try:
        assert await resolve(f"rtsp://127.0.0.1:{port}/live/s", timeout=30) == (
            "rtsp://10.0.0.7:8554/live/s?t=1")
    finally:
        server.close()


def test_resolve_takes_only_an_rtmp_url_from_an_rtmp_redirect():
    from lbmgmt.resolve import ResolveError, _redirect_from
    assert _redirect_from([{"ex": {"redirect": "rtmp://e:1935/live"}}], "s", "") == (
        "rtmp://e:1935/live/s")
    for target in ("-y", "file:///etc/passwd", "rtmp://e/live\nx"):
        with pytest.raises(ResolveError, match="not an absolute"):
            _redirect_from([{"ex": {"redirect": target}}], "s", "")
