"""The balancer's HTTP answers on a core alone (no daemon), and its config, with a fake clock.

The client port runs for real on loopback (``ClientPort``, httptools), driven by
aiohttp's client; time for the core is the test's ``Clock``.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import uuid
import xml.etree.ElementTree as ET

from dataclasses import dataclass

import aiohttp
import pytest
import uvloop
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st

from lbmgmt.balancer.config import ClientsConfig, HttpConfig, load_balancer_config
from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.front.protocol import ClientPort
from lbmgmt.balancer.rtmp import RtmpService
from lbmgmt.balancer.rtmp_config import RtmpConfig
from lbmgmt.clocks import Clocks
from lbmgmt.configfile import ConfigError
from lbmgmt.endpoints import Endpoint
from lbmgmt.rtmp import handshake
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey

KEY = SharedKey("http-test-key")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Front:
    core: BalancerCore
    config: HttpConfig
    clocks: Clocks


def make_balancer(**http) -> tuple[Front, Clock]:
    clock = Clock()
    core = BalancerCore(KEY, timeout=5.0, grace=0.5, max_clock_skew=30.0)
    return Front(core, HttpConfig(**http), Clocks(clock, clock)), clock


def receive(balancer: Front, data: bytes) -> None:
    clocks = balancer.clocks
    balancer.core.receive_datagram(data, now=clocks.monotonic(), wall=clocks.wall())


def send(balancer, clock, sealer, load=0.0, state=EdgeState.RUNNING, address=None):
    address = address or f"edge-{sealer.guid.int % 1000}.example:1935"
    receive(balancer, sealer.seal(Report(state, address, load, 2500), KEY, now=clock()))


class PortClient:
    """aiohttp's client on a ClientPort; paths go out exactly as written."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str, **kw) -> aiohttp.ClientResponse:
        return await self.session.get(yarl.URL(self.base + path, encoded=True), **kw)

    async def post(self, path: str, **kw) -> aiohttp.ClientResponse:
        return await self.session.post(yarl.URL(self.base + path, encoded=True), **kw)


@pytest.fixture
async def client_for():
    ports: list[ClientPort] = []
    session = aiohttp.ClientSession()

    async def make(balancer: Front) -> PortClient:
        rtmp = RtmpService(balancer.core, RtmpConfig(), balancer.clocks)
        port = ClientPort(balancer.core, balancer.config, ClientsConfig(), rtmp,
                          balancer.clocks)
        _, number = await port.listen(Endpoint("127.0.0.1", 0), http=True, rtmp=True)
        ports.append(port)
        return PortClient(session, number)

    yield make
    await session.close()
    for port in ports:
        port.close()
        port.close_connections()
        await port.wait_closed()


async def test_loadbalancer_answers_redirect_then_503(client_for):
    balancer, clock = make_balancer()
    client = await client_for(balancer)
    resp = await client.get("/loadbalancer")
    assert resp.status == 503 and await resp.text() == "error=no available server"
    sealer = ReportSealer(uuid.uuid4())
    send(balancer, clock, sealer, address="10.1.2.3")
    resp = await client.get("/loadbalancer?cachebust=1")
    assert resp.status == 200 and await resp.text() == "redirect=10.1.2.3"
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Cache-Control"] == "no-store"
    assert balancer.core.redirects_served["http"] == 1
    clock.now += 11.26  # 4 reports missed (and half an interval): out of choice at once,
    # before any sweep
    assert (await client.get("/loadbalancer")).status == 503


async def test_server_info_xml_lists_every_edge(client_for):
    balancer, clock = make_balancer()
    client = await client_for(balancer)
    a, b = ReportSealer(uuid.uuid4()), ReportSealer(uuid.uuid4())
    send(balancer, clock, a, load=3, address="a.example:1935")
    send(balancer, clock, b, load=1, state=EdgeState.PAUSED, address="b.example:1935")
    receive(balancer, b"garbage")
    await client.get("/loadbalancer")
    clock.now += 1.5
    resp = await client.get("/loadbalancer?serverInfoXML")
    assert resp.status == 200 and resp.content_type == "text/xml"
    root = ET.fromstring(await resp.read())
    assert root.get("serverCount") == "2" and root.get("availableCount") == "1"
    drops = {d.get("reason"): int(d.get("count")) for d in root.iter("Drop")}
    assert drops["malformed"] == 1 and root.find("Receiver").get("accepted") == "2"
    servers = {s.findtext("redirect"): s for s in root.iter("Server")}
    sa, sb = servers["a.example:1935"], servers["b.example:1935"]
    assert sa.findtext("guid") == str(a.guid)
    assert (sa.findtext("state"), sa.findtext("available"), sa.findtext("load")) == (
        "RUNNING", "true", "3")
    assert sa.findtext("redirectsSinceReport") == "1"
    assert float(sa.findtext("secondsSinceReport")) == pytest.approx(1.5)
    assert sa.findtext("messageCount") == "1"
    assert (sb.findtext("state"), sb.findtext("available")) == ("PAUSED", "false")


async def test_server_info_xml_can_be_switched_off(client_for):
    balancer, _ = make_balancer(enable_server_info_xml=False)
    client = await client_for(balancer)
    assert (await client.get("/loadbalancer?serverInfoXML")).status == 404


async def test_crossdomain_policy(client_for):
    balancer, _ = make_balancer()
    client = await client_for(balancer)
    resp = await client.get("/crossdomain.xml")
    root = ET.fromstring(await resp.read())
    assert root.tag == "cross-domain-policy"
    assert root.find("allow-access-from").get("domain") == "*"


@pytest.mark.parametrize("http, address, path, location", [
    ({}, "edge1.example:8080", "/redirect/live/s.m3u8?token=a%20b&x=1",
     "http://edge1.example:8080/live/s.m3u8?token=a%20b&x=1"),
    ({"redirect_scheme": "https", "redirect_port": 8443}, "edge1.example:1935",
     "/redirect/hls/x.m3u8", "https://edge1.example:8443/hls/x.m3u8"),
    ({}, "edge1.example", "/redirect/a%0D%0ASet-Cookie:x/b", "http://edge1.example/a%0D%0ASet-Cookie:x/b"),
    ({"redirect_port": 8080}, "[2001:db8::1]:1935", "/redirect/", "http://[2001:db8::1]:8080/"),
    ({}, "2001:db8::1", "/redirect/v", "http://[2001:db8::1]/v"),
])
async def test_redirect_302_keeps_path_and_query(client_for, http, address, path, location):
    balancer, clock = make_balancer(**http)
    client = await client_for(balancer)
    send(balancer, clock, ReportSealer(uuid.uuid4()), address=address)
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == location


async def test_redirect_503_and_unknown_paths(client_for):
    balancer, _ = make_balancer()
    client = await client_for(balancer)
    assert (await client.get("/redirect/live/x", allow_redirects=False)).status == 503
    assert (await client.get("/nothing")).status == 404
    assert (await client.post("/loadbalancer")).status == 405


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=1300), max_size=5))
def test_fuzz_receive_path_never_raises_or_changes_the_pool(datagrams):
    balancer, clock = make_balancer()
    sealer = ReportSealer(uuid.UUID(int=1))
    send(balancer, clock, sealer, load=2)
    registry = balancer.core.registry
    before = [(e.guid, e.state, e.load, e.reports_received) for e in registry]
    for data in datagrams:
        receive(balancer, data)
    assert [(e.guid, e.state, e.load, e.reports_received) for e in registry] == before
    assert balancer.core.receiver.dropped == len(datagrams)


def write(tmp_path, text):
    path = tmp_path / "balancer.toml"
    path.write_text(text)
    return path


def test_balancer_config_full(tmp_path):
    (tmp_path / "key").write_text("s3cret-s3cret-s3cret\n")
    cfg = load_balancer_config(write(tmp_path, """
[balancer]
listen = "127.0.0.1:11934"
key_file = "key"
message_timeout_ms = 3000
redirector = "round-robin"
[http]
listen = "[::1]:8080"
enable_server_info_xml = false
redirect_scheme = "https"
redirect_port = 443
"""))
    assert cfg.key == SharedKey("s3cret-s3cret-s3cret")
    assert cfg.listen == Endpoint("127.0.0.1", 11934)
    assert cfg.message_timeout_ms == 3000 and cfg.redirector == "round-robin"
    assert cfg.http.listen == (Endpoint("::1", 8080),) and not cfg.http.enable_server_info_xml
    assert (cfg.http.redirect_scheme, cfg.http.redirect_port) == ("https", 443)


def test_balancer_config_defaults(tmp_path):
    cfg = load_balancer_config(write(tmp_path, '[balancer]\nkey = "k-0123456789abcdef"\n'))
    assert cfg.listen == Endpoint("", 1934) and cfg.http.listen == (Endpoint("", 1935),)
    assert cfg.message_timeout_ms == 5000 and cfg.redirector == "concurrent-connects"
    assert "k" not in repr(cfg.key)


@pytest.mark.parametrize("text, line, field, message", [
    ('[balancer]\nlisten = "*:1934"\n', 1, "balancer.key", "exactly one of key or key_file"),
    ('[balancer]\nkey = "a"\nkey_file = "b"\n', 2, "balancer.key", "exactly one"),
    ('[balancer]\nkey_file = "missing"\n', 2, "balancer.key_file", "cannot read"),
    ('[balancer]\nkey = "k-0123456789abcdef"\nlisten = "1.2.3.4:99999"\n', 3,
     "balancer.listen", "bad port"),
    ('[balancer]\nkey = "k-0123456789abcdef"\nlisten = "::1:1934"\n', 3,
     "balancer.listen", "[addr]:port"),
    ('[balancer]\nkey = "k-0123456789abcdef"\nredirector = "fastest"\n', 3,
     "balancer.redirector", "unknown redirector"),
    ('[balancer]\nkey = "k-0123456789abcdef"\n[http]\nenable_server_info_xml = "yes"\n', 4,
     "http.enable_server_info_xml", "true or false"),
    ('[balancer]\nkey = "k-0123456789abcdef"\n[http]\nredirect_scheme = "rtmp"\n', 4,
     "http.redirect_scheme", "http or https"),
    ('[balancer]\nkey = "k-0123456789abcdef"\nmessage_timeout = 5\n', 3,
     "balancer.message_timeout", "unknown key"),
    ('key = "k-0123456789abcdef"\n', 1, "key", "unknown table or key"),
])
def test_balancer_config_errors_name_file_line_field(tmp_path, text, line, field, message):
    assert_config_error(tmp_path, text, line, field, message)


def assert_config_error(tmp_path, text, line, field, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_balancer_config(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), line, field), \
        str(err.value)
    assert message in str(err.value)


def test_shipped_balancer_example_has_the_default_rtmp_app():
    from pathlib import Path
    cfg = load_balancer_config(Path(__file__).parents[2] / "examples" / "balancer.toml")
    assert cfg.rtmp.enabled and cfg.rtmp.listen is None
    [app] = cfg.rtmp.apps.values()
    assert (app.name, app.mode, app.redirect_app_name, app.redirect_on_connect) == (
        "redirect", "redirect", "live", True)


def test_rtmp_config_apps_and_defaults(tmp_path):
    cfg = load_balancer_config(write(tmp_path, '[balancer]\nkey = "k-0123456789abcdef"\n'))
    assert list(cfg.rtmp.apps) == ["redirect"] and cfg.rtmp.max_message_size == 65536
    cfg = load_balancer_config(write(tmp_path, """
[balancer]
key = "k-0123456789abcdef"
[rtmp]
listen = "127.0.0.1:1936"
[rtmp.apps.tv]
redirect_app_name = "hd"
redirect_port = 1940
redirect_scheme = "rtmps"
redirect_on_connect = false
[rtmp.apps.live]
mode = "proxy"
"""))
    assert cfg.rtmp.listen == Endpoint("127.0.0.1", 1936)
    tv, live = cfg.rtmp.apps["tv"], cfg.rtmp.apps["live"]
    assert (tv.redirect_app_name, tv.redirect_port, tv.redirect_scheme,
            tv.redirect_on_connect) == ("hd", 1940, "rtmps", False)
    assert live.mode == "proxy"


@pytest.mark.parametrize("text, line, field, message", [
    ('[rtmp.apps.x]\nmode = "forward"\n', 2, "rtmp.apps.x.mode", "redirect, proxy"),
    ('[rtmp.apps.x]\nredirect_scheme = "http"\n', 2, "rtmp.apps.x.redirect_scheme", "rtmp"),
    ('[rtmp.apps.x]\nredirect_port = 0\n', 2, "rtmp.apps.x.redirect_port", "at least 1"),
    ('[rtmp.apps.x]\nredirect_app = "live"\n', 2, "rtmp.apps.x.redirect_app", "unknown key"),
    ('[rtmp]\nmax_chunk_size = 1\n', 2, "rtmp.max_chunk_size", "at least 128"),
    ('[rtmp]\nlisten = "x:y"\n', 2, "rtmp.listen", "bad port"),
])
def test_rtmp_config_errors_name_file_line_field(tmp_path, text, line, field, message):
    assert_config_error(tmp_path, '[balancer]\nkey = "k-0123456789abcdef"\n' + text, line + 2,
                        field, message)


# -- a closed connection is freed at once ----------------------------------------------
async def close_connections_one_by_one(count: int, protocol: str) -> list[str]:
    """Serve ``count`` connections one after another, each closed; the names of the
    balancer's objects the garbage collector then found.

    HTTP: closed by the balancer after the answer, by the client, after a refusal.
    RTMP: the handshake, then a chunk over the message cap (a protocol error).
    """
    balancer, clock = make_balancer()
    send(balancer, clock, ReportSealer(uuid.uuid4()), address="10.1.2.3")
    rtmp = RtmpService(balancer.core, RtmpConfig(), balancer.clocks)
    port = ClientPort(balancer.core, balancer.config, ClientsConfig(), rtmp, balancer.clocks)
    _, number = await port.listen(Endpoint("127.0.0.1", 0), http=True, rtmp=True)
    loop = asyncio.get_running_loop()
    requests = [b"GET /loadbalancer HTTP/1.1\r\nConnection: close\r\n\r\n",
                b"GET /loadbalancer HTTP/1.1\r\n\r\n",  # kept alive: the client closes
                b"GET /loadbalancer HTTP/1.1\r\nContent-Length: 20000\r\n\r\n"
                + bytes(20000)]  # 413

    async def one(i: int, sock: socket.socket) -> None:
        if protocol == "http":
            await loop.sock_sendall(sock, requests[i % len(requests)])
            assert (await loop.sock_recv(sock, 4096)).startswith(b"HTTP/1.1 ")
            return
        await loop.sock_sendall(sock, bytes((handshake.VERSION,)) + bytes(handshake.PACKET))
        got = b""
        while len(got) < 1 + 2 * handshake.PACKET:
            got += await loop.sock_recv(sock, 8192)
        # C2, then a chunk announcing a 16 MiB message: a protocol error at once
        await loop.sock_sendall(sock, got[1:1 + handshake.PACKET]
                                + b"\x03\x00\x00\x00\xff\xff\xff\x08\x01\x00\x00\x00")
        assert await loop.sock_recv(sock, 4096) == b""  # closed by the balancer

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage
    try:
        for i in range(count):
            # a bare socket: the client side leaves no protocol objects of its own
            with socket.socket() as sock:
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", number))
                await one(i, sock)
            await until_true(lambda: not port.connections and not rtmp.active
                             and port.admission.total == 0)
        gc.collect()
        return sorted({type(o).__qualname__ for o in gc.garbage
                       if type(o).__module__.startswith("lbmgmt")})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        port.close()
        port.close_connections()
        await port.wait_closed()


async def until_true(condition, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)  # (polls the condition; no timing is assumed)


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
@pytest.mark.parametrize("protocol", ["http", "rtmp"])
def test_a_closed_connection_leaves_nothing_for_the_garbage_collector(protocol, loop_name):
    # The collector's work grows with every object in the balancer (at 10 000 edges a
    # full collection takes tens of milliseconds): a connection must be freed by
    # reference counting alone, with no cycle of its objects left behind.
    factory = uvloop.new_event_loop if loop_name == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(close_connections_one_by_one(30, protocol)) == []
