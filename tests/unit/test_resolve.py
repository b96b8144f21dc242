"""``lbmgmt resolve`` for every scheme: the streamid and URL functions alone, then each
scheme against an in-process balancer and against servers that answer badly.

(The rtsp:// answers and the RTMP redirect's checks are in test_client_protocols.py;
tests/e2e/test_resolve.py runs the command against a balancer process and ffmpeg.)
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from lbmgmt.balancer.rtmp_config import RtmpApp, RtmpConfig
from lbmgmt.cli import main
from lbmgmt.fleet.inprocess import InProcessFleet
from lbmgmt.resolve import (
    MAX_ANSWER,
    ResolveError,
    address_of_answer,
    balancer_endpoint,
    loadbalancer_target,
    query_value,
    resolve,
    rtmp_url_of_address,
    split_srt_url,
    stream_of_streamid,
)

HOST = "127.0.0.1"


# -- streamids -------------------------------------------------------------------------------
@pytest.mark.parametrize("streamid,stream", [
    # the SRT Access Control syntax: SRS, ZLMediaKit, MediaMTX
    ("#!::r=live/s,m=publish", "live/s"),
    ("#!::m=request,r=live/s", "live/s"),
    ("#!::h=srs.example.net,r=live/s,m=publish", "live/s"),
    ("#!::u=johnny,t=stream,m=publish,r=live/s,s=secret", "live/s"),
    ("#!::r=live/s?secret=d6d2be37,m=publish", "live/s"),  # SRS's token in r
    ("#!::bmd_uuid=0e1d,bmd_name=cam,r=cam3,m=publish", "cam3"),  # unknown keys
    ("#!::h=live/s,m=publish", "live/s"),  # SRS's older form: the stream in h
    ("#!::h=srs.example.net/live/s,m=request", "live/s"),  # ... after a vhost
    ("#!::h=srs.example.net,m=publish", None),  # a host, no stream
    ("#!::m=publish", None),
    # MediaMTX: action:path[:query], action:path:user:pass[:query]
    ("read:live/s", "live/s"),
    ("publish:live/s", "live/s"),
    ("publish:cam1:token=abc", "cam1"),
    ("read:live/s:viewer:pa55", "live/s"),
    ("publish:live/s:user:pass:token=abc", "live/s"),
    ("read:", None),
    # plain
    ("play/live/s", "live/s"),
    ("publish/live/s", "live/s"),
    ("live/s", "live/s"),
    ("/live/s/", "live/s"),
    ("s", "s"),
    ("play/s", "play/s"),  # a mode word with one name after it is an app
    ("srt://origin.example:9999/app/s", "app/s"),  # OvenMediaEngine: a URL
    ("", None),
    ("x" * 2000, None),  # longer than any stream a balancer looks up
])
def test_the_stream_of_each_streamid_form(streamid: str, stream: str | None):
    assert stream_of_streamid(streamid) == stream


def test_the_streamid_is_found_in_the_query_and_percent_decoded():
    assert query_value("mode=caller&streamid=%23!%3A%3Ar%3Dlive%2Fs&latency=200",
                       "streamid") == "#!::r=live/s"
    assert query_value("streamid=a+b&streamid=other", "streamid") == "a+b"  # as ffmpeg
    assert query_value("latency=200", "streamid") is None


# -- srt:// URLs -----------------------------------------------------------------------------
@pytest.mark.parametrize("url,host,stream,edge_url", [
    ("srt://lb:9000?streamid=play/live/s", "lb", "live/s",
     "srt://edge2.example:9000?streamid=play/live/s"),
    # '#' after '?' is the streamid's, not a fragment: kept as given, as ffmpeg reads it
    ("srt://lb:9000?streamid=#!::r=live/s,m=publish&latency=200", "lb", "live/s",
     "srt://edge2.example:9000?streamid=#!::r=live/s,m=publish&latency=200"),
    ("srt://lb:9000?streamid=%23%21%3A%3Ar%3Dlive%2Fs%2Cm%3Drequest", "lb", "live/s",
     "srt://edge2.example:9000?streamid=%23%21%3A%3Ar%3Dlive%2Fs%2Cm%3Drequest"),
    ("srt://[2001:db8::1]:9000?streamid=read:live/s:u:p", "2001:db8::1", "live/s",
     "srt://edge2.example:9000?streamid=read:live/s:u:p"),
    ("SRT://lb:9000", "lb", None, "srt://edge2.example:9000"),  # no streamid: no stream
])
def test_an_srt_url_keeps_its_port_and_query_on_the_edge(url, host, stream, edge_url):
    srt = split_srt_url(url)
    assert (srt.host, srt.port, srt.stream) == (host, 9000, stream)
    assert srt.with_host("edge2.example") == edge_url


def test_an_ipv6_edge_is_bracketed_in_the_srt_url():
    srt = split_srt_url("srt://lb:9000?streamid=read:live/s")
    assert srt.with_host("2001:db8::7") == "srt://[2001:db8::7]:9000?streamid=read:live/s"


@pytest.mark.parametrize("url,error", [
    ("srt://lb?streamid=read:live/s", "no port"),
    ("srt://lb:99999?streamid=x", "bad port"),
    ("srt://:9000?streamid=x", "no host"),
    ("srt://lb:9000#x?streamid=x", "'#' before the query"),
])
def test_bad_srt_urls(url: str, error: str):
    with pytest.raises(ResolveError, match=error):
        split_srt_url(url)


@pytest.mark.parametrize("via,endpoint", [
    (None, ("lb.example", 1935)),  # the balancer's client port on the URL's host
    ("10.0.0.5:8080", ("10.0.0.5", 8080)),
    ("balancer.example", ("balancer.example", 1935)),
    ("[2001:db8::1]", ("2001:db8::1", 1935)),
    ("[2001:db8::1]:80", ("2001:db8::1", 80)),
])
def test_where_an_srt_url_is_asked(via, endpoint):
    assert balancer_endpoint("lb.example", via) == endpoint


@pytest.mark.parametrize("via", ["*:1935", ":1935", "2001:db8::1", "lb:x", ""])
def test_a_bad_via_is_refused(via: str):
    with pytest.raises(ResolveError, match="--via"):
        balancer_endpoint("lb", via)


def test_the_stream_goes_in_the_query_percent_encoded_but_for_slashes():
    assert loadbalancer_target(None) == "/loadbalancer"
    assert loadbalancer_target("live/s") == "/loadbalancer?stream=live/s"
    assert loadbalancer_target("live/a b+c&d=é") == (
        "/loadbalancer?stream=live/a%20b%2Bc%26d%3D%C3%A9")


# -- /loadbalancer answers -------------------------------------------------------------------
def test_the_address_of_a_loadbalancer_answer():
    assert address_of_answer(200, "OK", b"redirect=edge2.example:1935") == "edge2.example:1935"
    assert address_of_answer(200, "OK", b"redirect=[2001:db8::7]:1935\n") == (
        "[2001:db8::7]:1935")
    with pytest.raises(ResolveError, match=r"HTTP 503 Service Unavailable: the balancer gave "
                                           r"no edge \(error=no available server\)"):
        address_of_answer(503, "Service Unavailable", b"error=no available server")
    for body in (b"<html>", b"redirect=", b"redirect=a b", b"redirect=a\x1bb"):
        with pytest.raises(ResolveError, match="not a redirect=<address> answer"):
            address_of_answer(200, "OK", body)


def test_a_loadbalancer_address_as_an_rtmp_url():
    assert rtmp_url_of_address("edge2.example:1935", "live/s") == (
        "rtmp://edge2.example:1935/live/s")
    assert rtmp_url_of_address("[2001:db8::7]:1935", None) == "rtmp://[2001:db8::7]:1935"
    assert rtmp_url_of_address("edge2.example", "live/a b?c") == (
        "rtmp://edge2.example/live/a%20b%3Fc")
    with pytest.raises(ResolveError, match="no host"):
        rtmp_url_of_address(":1935", "live/s")


# -- every scheme against an in-process balancer ---------------------------------------------
EDGE = "edge2.example:19350"  # the edge's address: its RTMP port


@pytest.fixture
async def balancer(tmp_path):
    """An in-process balancer with one made-up edge at EDGE; its client port."""
    fleet = InProcessFleet(tmp_path)
    await fleet.start_balancer(mgmt_port=None, rtmp=RtmpConfig(apps={
        "redirect": RtmpApp("redirect"),
        "late": RtmpApp("late", redirect_on_connect=False)}))
    fleet.report(EDGE)
    yield fleet.http_port
    await fleet.stop()


@pytest.mark.parametrize("url,printed", [
    ("srt://lb.example:9000?streamid=publish:live/s",
     "srt://edge2.example:9000?streamid=publish:live/s"),
    ("srt://lb.example:9000?streamid=#!::r=live/s,m=request",
     "srt://edge2.example:9000?streamid=#!::r=live/s,m=request"),
    ("http://{lb}/redirect/hls/s.m3u8?t=1", "http://edge2.example:19350/hls/s.m3u8?t=1"),
    ("http://{lb}/loadbalancer?stream=live%2Fs", "rtmp://edge2.example:19350/live/s"),
    ("http://{lb}/loadbalancer", "rtmp://edge2.example:19350"),
    ("rtmp://{lb}/redirect/s?token=1", "rtmp://edge2.example:19350/live/s?token=1"),
    # accepted connect: play(stream) answered with the URL (the stream in it once)
    ("rtmp://{lb}/late/s?token=1", "rtmp://edge2.example:19350/live/s?token=1"),
    ("rtmp://{lb}/late/s", "rtmp://edge2.example:19350/live/s"),
    ("rtsp://{lb}/live/s", "rtsp://edge2.example:19350/live/s"),
])
async def test_each_scheme_resolves_to_the_edge(balancer: int, url: str, printed: str):
    lb = f"{HOST}:{balancer}"
    via = lb if url.startswith("srt") else None  # (the balancer is not on lb.example:1935)
    assert await resolve(url.format(lb=lb), via=via, timeout=30) == printed


@pytest.mark.parametrize("url", [
    "srt://lb.example:9000?streamid=#!::r=live/s,m=request",
    "srt://lb.example:9000?streamid=%23!%3A%3Ah%3Dlive%2Fs%2Cm%3Dpublish",
    "srt://lb.example:9000?streamid=read:live/s:viewer:pa55",
    "srt://lb.example:9000?streamid=publish/live/s",
    "http://{lb}/loadbalancer?stream=live/s",
    "http://{lb}/redirect/live/s.m3u8",
    "rtmp://{lb}/late/s?token=1",
    "rtsp://{lb}/live/s",
])
async def test_the_stream_reaches_the_balancer_so_its_carrier_is_chosen(tmp_path, url: str):
    # edge2 carries live/s and is busier: only a balancer that knows the stream picks it
    from lbmgmt.streams import stream_key
    async with InProcessFleet(tmp_path) as fleet:
        await fleet.start_balancer(mgmt_port=None, redirector="stream-affinity",
                                   rtmp=RtmpConfig(apps={
                                       "late": RtmpApp("late", redirect_on_connect=False)}))
        fleet.report("edge1.example:19350", load=0)
        fleet.report("edge2.example:19350", load=4, streams=(stream_key("live/s"),))
        lb = f"{HOST}:{fleet.http_port}"
        via = lb if url.startswith("srt") else None
        printed = await resolve(url.format(lb=lb), via=via, timeout=30)
    assert printed.split("://")[1].startswith("edge2.example:"), printed


async def test_an_accepting_application_needs_a_stream(balancer: int):
    with pytest.raises(ResolveError, match="name a stream"):
        await resolve(f"rtmp://{HOST}:{balancer}/late", timeout=30)


async def test_no_edge_is_an_error_naming_the_status(tmp_path):
    async with InProcessFleet(tmp_path) as fleet:
        await fleet.start_balancer(mgmt_port=None)
        lb = f"{HOST}:{fleet.http_port}"
        with pytest.raises(ResolveError, match=r"HTTP 503 .*no available server"):
            await resolve("srt://lb.example:9000?streamid=read:s", via=lb, timeout=30)
        with pytest.raises(ResolveError, match=r"HTTP 503 .*gave no redirect"):
            await resolve(f"http://{lb}/redirect/s", timeout=30)
        with pytest.raises(ResolveError, match=r"HTTP 404 Not Found: the balancer gave no "
                                               r"redirect \(404: Not Found\)"):
            await resolve(f"http://{lb}/nothing", timeout=30)


# -- servers that answer badly ---------------------------------------------------------------
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def server(serve: Serve, context: ssl.SSLContext | None = None):
    s = await asyncio.start_server(serve, HOST, 0, ssl=context)
    return s, s.sockets[0].getsockname()[1]


def answering(answer: bytes, requests: list[bytes] | None = None) -> Serve:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if requests is not None:
            requests.append(head)
        writer.write(answer)
        await writer.drain()
        writer.close()
    return serve


async def test_an_srt_url_asks_for_its_stream_and_nothing_else():
    requests: list[bytes] = []
    s, port = await server(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n"
                                     b"redirect=edge2.example:1935", requests))
    async with s:
        printed = await resolve("srt://lb.example:9000?streamid=read:live/s:viewer:pa55",
                                via=f"{HOST}:{port}", timeout=30)
    assert printed == "srt://edge2.example:9000?streamid=read:live/s:viewer:pa55"
    request_line, *headers = requests[0].decode().split("\r\n")
    assert request_line == "GET /loadbalancer?stream=live/s HTTP/1.1"  # no credentials
    assert f"Host: {HOST}:{port}" in headers


@pytest.mark.parametrize("answer,printed", [
    # chunked, and a body that ends with the connection
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nredirect=\r\n"
     b"5\r\ne:123\r\n0\r\n\r\n", "srt://e:9000?streamid=live/s"),
    (b"HTTP/1.0 200 OK\r\n\r\nredirect=[2001:db8::7]:1935",
     "srt://[2001:db8::7]:9000?streamid=live/s"),
])
async def test_loadbalancer_answers_in_any_framing(answer: bytes, printed: str):
    s, port = await server(answering(answer))
    async with s:
        assert await resolve("srt://lb:9000?streamid=live/s", via=f"{HOST}:{port}",
                             timeout=30) == printed


@pytest.mark.parametrize("answer,error", [
    # (what it prints goes on a player's command line: "-y" would be an option)
    (b"HTTP/1.1 302 Found\r\nLocation: -y\r\nContent-Length: 0\r\n\r\n", "not an absolute"),
    (b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\n\r\n", "not an absolute"),
    (b"HTTP/1.1 302 Found\r\nLocation: /hls/s.m3u8\r\n\r\n", "not an absolute"),
    (b"HTTP/1.1 307 Temporary Redirect\r\nLocation: rtmp://e/live\r\n\r\n", "not an absolute"),
    (b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", "not an absolute"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", "HTTP 200 OK: the balancer gave no "
                                                       "redirect"),
    (b"HTTP/1.1 302 Found\r\nLocation: http://e/" + b"x" * MAX_ANSWER + b"\r\n\r\n",
     "longer than"),
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "not an HTTP answer"),
    (b"", "closed the connection without an answer"),
])
async def test_http_redirects_only_to_an_absolute_http_url(answer: bytes, error: str):
    s, port = await server(answering(answer))
    async with s:
        with pytest.raises(ResolveError, match=error):
            await resolve(f"http://{HOST}:{port}/redirect/hls/s.m3u8", timeout=30)


async def test_a_hostile_srt_answer_is_refused():
    body = b"redirect=evil.example/x y"
    s, port = await server(answering(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                     % (len(body), body)))
    async with s:
        with pytest.raises(ResolveError, match="not a redirect=<address> answer"):
            await resolve("srt://lb:9000?streamid=live/s", via=f"{HOST}:{port}", timeout=30)


async def test_a_balancer_that_never_answers_is_given_up_on():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client goes

    s, port = await server(silent)
    async with s:
        with pytest.raises(ResolveError, match=f"{HOST}:{port} did not answer within 0.2 s"):
            await resolve(f"http://{HOST}:{port}/redirect/s", timeout=0.2)


# -- https:// --------------------------------------------------------------------------------
def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lbmgmt-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_https_verifies_the_certificate_unless_told_not_to(tmp_path):
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    answer = b"HTTP/1.1 302 Found\r\nLocation: https://edge2.example/hls/s.m3u8\r\n\r\n"
    s, port = await server(answering(answer), context)
    url = f"https://{HOST}:{port}/redirect/hls/s.m3u8"
    async with s:
        with pytest.raises(ResolveError, match="TLS certificate not verified"):
            await resolve(url, timeout=30)
        assert await resolve(url, cafile=str(cert), timeout=30) == (
            "https://edge2.example/hls/s.m3u8")
        assert await resolve(url, insecure=True, timeout=30) == (
            "https://edge2.example/hls/s.m3u8")
    with pytest.raises(ResolveError, match="cannot read --cafile"):
        await resolve(url, cafile=str(tmp_path / "missing.pem"), timeout=30)


# -- the command -----------------------------------------------------------------------------
@pytest.mark.parametrize("args,error", [
    (["ftp://lb/x"], "cannot resolve ftp:// URLs: give rtmp://, rtsp://, srt:// or http(s)://"),
    (["lb/x"], "cannot resolve 'lb/x' URLs"),
    (["--via", "lb:1935", "rtmp://lb/redirect/s"], "--via is for srt:// URLs"),
    (["srt://lb?streamid=live/s"], "no port in"),
    (["rtmp://lb/redirect/a b"], "spaces or control characters"),
])
def test_errors_are_one_line_and_status_1(capsys, args: list[str], error: str):
    assert main(["resolve", *args]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("lbmgmt resolve: ") and error in err
