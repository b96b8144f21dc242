"""RTMP sans-IO: AMF0, chunks, handshake, and server/client as in-memory peers.

tests/data holds frames captured from real peers: ffmpeg 5.1's C0+C1 and
its opening bytes after C2 (the ``connect`` of ``ffmpeg -i
rtmp://host/redirect/stream``), and nginx-rtmp 1.22's answer to a connect to
its ``live`` application.
"""

from __future__ import annotations

import binascii
import datetime
import math
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbmgmt.balancer.front.rtmp_apps import _split_app, edge_url
from lbmgmt.balancer.rtmp_config import RtmpApp
from lbmgmt.edge.monitors import MonitorError, count_nginx_rtmp_clients
from lbmgmt.rtmp import amf0, chunks
from lbmgmt.rtmp.chunks import ChunkDecoder, ChunkEncoder, ChunkError, Message
from lbmgmt.rtmp.client import ClientConnection
from lbmgmt.rtmp.commands import command_message, parse_command, status
from lbmgmt.rtmp.server import (CommandReceived, ConnectionFailed, HandshakeCompleted,
                                MessageReceived, ServerConnection, State)
import contextlib

DATA = Path(__file__).parents[1] / "data"


def captured(name: str) -> bytes:
    return binascii.unhexlify((DATA / name).read_text().strip())


# -- AMF0 ------------------------------------------------------------------------
def test_amf0_byte_level_encoding():
    assert amf0.encode(1.0) == b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
    assert amf0.encode(True, False) == b"\x01\x01\x01\x00"
    assert amf0.encode("ab") == b"\x02\x00\x02ab"
    assert amf0.encode(None) == b"\x05"
    assert amf0.encode(amf0.UNDEFINED_VALUE) == b"\x06"
    assert amf0.encode({"a": 1.0}) == b"\x03\x00\x01a\x00\x3f\xf0" + bytes(6) + b"\x00\x00\x09"
    assert amf0.encode(amf0.ECMAArray(a="b")) == \
        b"\x08\x00\x00\x00\x01\x00\x01a\x02\x00\x01b\x00\x00\x09"
    assert amf0.encode([1.0, "x"]) == b"\x0a\x00\x00\x00\x02\x00\x3f\xf0" + bytes(6) + \
        b"\x02\x00\x01x"
    assert amf0.encode(amf0.AMFDate(1000.0)) == b"\x0b" + struct.pack("!d", 1000.0) + b"\0\0"
    long = "é" * 40000  # 80000 UTF-8 bytes: needs a long string
    assert amf0.encode(long)[:5] == b"\x0c\x00\x01\x38\x80"


def test_amf0_round_trip_every_type():
    values = [0.0, -1.5, 1e300, True, False, "", "ünïcödé", "x" * 70000, None,
              amf0.UNDEFINED_VALUE, {"a": {"b": [1.0, None, {"c": "d"}]}, "e": True},
              amf0.ECMAArray(duration=0.0, width=320.0), [], [[[]]],
              amf0.AMFDate(1_700_000_000_123.0, 0)]
    assert amf0.decode_all(amf0.encode(*values)) == values
    decoded = amf0.decode(amf0.encode(amf0.ECMAArray(a=1.0)))
    assert isinstance(decoded, amf0.ECMAArray)
    when = datetime.datetime(2026, 11, 25, tzinfo=datetime.UTC)
    assert amf0.decode(amf0.encode(when)).to_datetime() == when


@pytest.mark.parametrize("data, message", [
    (b"\x02\x00\x05ab", "truncated"),
    (b"\x11", "unsupported AMF0 type 0x11"),
    (b"\x09", "object end where a value"),
    (b"\x03\x00\x00\x05", "empty property name without object end"),
    (b"\x02\x00\x02\xff\xfe", "invalid UTF-8"),
    (b"\x0a\xff\xff\xff\xff", "strict array claims"),
    (b"\x0b" + struct.pack("!d", math.nan) + b"\0\0", "finite"),
    (b"\x0a\x00\x00\x00\x01" * 40 + b"\x05", "nested too deeply"),
])
def test_amf0_decode_errors(data, message):
    with pytest.raises(amf0.AMF0Error, match=message):
        amf0.decode_all(data)


def test_amf0_encode_errors():
    for bad in (object(), {1: "a"}, {"": 1}, datetime.datetime(2020, 1, 1)):
        with pytest.raises(amf0.AMF0Error):
            amf0.encode(bad)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_amf0_decoder_fails_only_with_amf0_error(data):
    with contextlib.suppress(amf0.AMF0Error):
        amf0.decode_all(data)


amf_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(min_size=1, max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(amf_values)
def test_fuzz_amf0_round_trip(value):
    assert amf0.decode(amf0.encode(value)) == value


# -- chunks ----------------------------------------------------------------------
def test_ffmpeg_connect_decodes_from_captured_bytes():
    """ffmpeg's connect: a type 0 chunk, then a type 3 chunk at the default 128 bytes."""
    data = captured("ffmpeg-connect.hex")
    assert data[0] == 0x03 and data[128 + 12] == 0xC3  # fmt 0 on csid 3, then fmt 3
    decoder = ChunkDecoder()
    [message] = decoder.feed(data)
    assert (message.type_id, message.csid, message.stream_id) == (chunks.COMMAND_AMF0, 3, 0)
    command = parse_command(message)
    assert (command.name, command.transaction_id) == ("connect", 1.0)
    assert command.command_object["app"] == "redirect"
    assert command.command_object["tcUrl"].endswith("/redirect")
    assert command.command_object["flashVer"].startswith("LNX")


def test_captured_frames_decode_byte_by_byte_too():
    data = captured("ffmpeg-connect.hex")
    decoder = ChunkDecoder()
    out = []
    for i in range(len(data)):
        out += decoder.feed(data[i:i + 1])
    assert len(out) == 1 and parse_command(out[0]).name == "connect"


def test_nginx_rtmp_connect_result_from_captured_bytes():
    """nginx-rtmp answers with control messages, a chunk size change, then _result."""
    messages = ChunkDecoder().feed(captured("nginx-rtmp-connect-result.hex"))
    kinds = [m.type_id for m in messages]
    assert kinds == [chunks.WINDOW_ACK_SIZE, chunks.SET_PEER_BANDWIDTH, chunks.SET_CHUNK_SIZE,
                     chunks.COMMAND_AMF0]
    assert struct.unpack("!I", messages[0].payload)[0] == 5_000_000
    result = parse_command(messages[-1])
    assert result.name == "_result" and result.transaction_id == 1.0
    assert result.args[0]["code"] == "NetConnection.Connect.Success"


def chunk(fmt, csid, header=b"", payload=b"", ext=b""):
    return bytes((fmt << 6 | csid,)) + header + ext + payload


def test_all_four_header_formats_and_timestamp_deltas():
    h0 = (1000).to_bytes(3, "big") + (4).to_bytes(3, "big") + b"\x09" + struct.pack("<I", 1)
    h1 = (20).to_bytes(3, "big") + (2).to_bytes(3, "big") + b"\x08"
    h2 = (30).to_bytes(3, "big")
    data = (chunk(0, 4, h0, b"abcd") + chunk(1, 4, h1, b"ef") + chunk(2, 4, h2, b"gh")
            + chunk(3, 4, b"", b"ij"))
    msgs = ChunkDecoder().feed(data)
    assert [(m.type_id, m.payload, m.timestamp, m.stream_id) for m in msgs] == [
        (9, b"abcd", 1000, 1), (8, b"ef", 1020, 1), (8, b"gh", 1050, 1), (8, b"ij", 1080, 1)]


def test_extended_timestamps_on_first_and_continuation_chunks():
    enc = ChunkEncoder()
    payload = bytes(range(256)) * 2
    data = enc.encode(Message(9, payload, 1, 0x1234567, csid=6))
    assert data[1:4] == b"\xff\xff\xff" and data[12:16] == struct.pack("!I", 0x1234567)
    # every continuation chunk repeats the extended timestamp
    assert data[12 + 4 + 128] == 0xC6 and data[12 + 4 + 128 + 1:12 + 4 + 128 + 5] == \
        struct.pack("!I", 0x1234567)
    [msg] = ChunkDecoder().feed(data)
    assert (msg.payload, msg.timestamp) == (payload, 0x1234567)


@pytest.mark.parametrize("csid", [2, 63, 64, 319, 320, 65599])
def test_basic_header_sizes(csid):
    data = ChunkEncoder().encode(Message(20, b"x" * 300, csid=csid))
    basic = 1 if csid < 64 else 2 if csid < 320 else 3
    assert len(data) - 300 == 3 * basic + 11  # three chunks at 128 bytes, one full header
    [msg] = ChunkDecoder().feed(data)
    assert (msg.csid, msg.payload) == (csid, b"x" * 300)


def test_set_chunk_size_applies_to_the_next_chunk_and_abort_drops_partial():
    enc = ChunkEncoder()
    data = enc.set_chunk_size(4096) + enc.encode(Message(9, b"v" * 3000, csid=6))
    decoder = ChunkDecoder()
    msgs = decoder.feed(data)
    assert decoder.chunk_size == 4096 and msgs[-1].payload == b"v" * 3000
    # half a message on csid 7, then Abort(7), then a new message on csid 7
    h0 = (0).to_bytes(3, "big") + (300).to_bytes(3, "big") + b"\x09" + b"\0\0\0\0"
    decoder = ChunkDecoder()
    assert decoder.feed(chunk(0, 7, h0, b"a" * 128)) == []
    abort = enc.encode(chunks.control(chunks.ABORT, struct.pack("!I", 7)))
    h0b = (0).to_bytes(3, "big") + (2).to_bytes(3, "big") + b"\x08" + b"\0\0\0\0"
    msgs = decoder.feed(abort + chunk(0, 7, h0b, b"ok"))
    assert [m.payload for m in msgs][-1] == b"ok"


def test_interleaved_chunk_streams():
    enc = ChunkEncoder()
    a = enc.encode(Message(9, b"A" * 200, csid=6))
    b = enc.encode(Message(8, b"B" * 200, csid=4))
    # a's first chunk, b's first chunk, a's rest, b's rest
    a1, a2 = a[:12 + 128], a[12 + 128:]
    b1, b2 = b[:12 + 128], b[12 + 128:]
    msgs = ChunkDecoder().feed(a1 + b1 + a2 + b2)
    assert sorted(m.payload for m in msgs) == [b"A" * 200, b"B" * 200]


@pytest.mark.parametrize("data, message", [
    (chunk(1, 5, bytes(7)), "starts with a type 1 header"),
    (chunk(0, 5, bytes(3) + (70000).to_bytes(3, "big") + b"\x09" + bytes(4)), "exceeds"),
    (ChunkEncoder().encode(chunks.control(chunks.SET_CHUNK_SIZE, struct.pack("!I", 1 << 20))),
     "chunk size"),
    (ChunkEncoder().encode(chunks.control(chunks.SET_CHUNK_SIZE, struct.pack("!I", 0))),
     "chunk size 0"),
])
def test_chunk_stream_errors(data, message):
    with pytest.raises(ChunkError, match=message):
        ChunkDecoder(max_message_size=65536, max_chunk_size=65536).feed(data)


def test_chunk_stream_count_is_capped():
    enc = ChunkEncoder()
    decoder = ChunkDecoder(max_streams=4)
    # complete first chunks of unfinished messages: each opens a chunk stream
    data = b"".join(enc.encode(Message(9, b"x" * 200, csid=c))[:12 + 128] for c in range(3, 9))
    with pytest.raises(ChunkError, match="more than 4 chunk streams"):
        decoder.feed(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=6000))
def test_fuzz_chunk_decoder_fails_only_with_chunk_error(data):
    decoder = ChunkDecoder(max_chunk_size=256, max_message_size=512, max_streams=4)
    with contextlib.suppress(ChunkError):
        decoder.feed(data)
    assert decoder.buffered <= min(len(data), decoder.max_buffered)


# Chunk streams that are mostly valid (so the decoder keeps reading): several
# messages at once on chunk streams 2-12, their chunks interleaved as RTMP allows,
# some larger than the cap, then garbage; fed in pieces of ``step`` bytes.
chunk_traffic = st.tuples(
    st.integers(1, 300),  # the chunk size the sender announces (over 256: refused)
    st.lists(st.tuples(st.integers(2, 12), st.sampled_from([8, 9, 18, 20]),
                       # mostly within the 512-byte cap, so several are under way at once
                       st.one_of(st.integers(200, 512), st.integers(0, 512),
                                 st.integers(0, 512), st.integers(513, 6000))),
             min_size=1, max_size=12, unique_by=lambda m: m[0]),
    st.binary(max_size=40),
    st.integers(1, 1500))


def interleaved(chunk_size: int, messages: list[tuple[int, int, int]], garbage: bytes) -> bytes:
    """Set Chunk Size, then every message's chunks taken in turn, one from each."""
    head = ChunkEncoder().set_chunk_size(chunk_size)
    queues = []
    for csid, type_id, size in messages:
        enc = ChunkEncoder()
        enc.set_chunk_size(chunk_size)
        data = enc.encode(Message(type_id, bytes(size), 1, 0, csid))
        first = 1 + 11 + min(chunk_size, size)  # csid < 64: one-byte basic header
        cut = [data[:first]] + [data[i:i + 1 + chunk_size]
                                for i in range(first, len(data), 1 + chunk_size)]
        queues.append(cut)
    out = [head]
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return b"".join(out) + garbage


def fed(decoder_feed, data: bytes, step: int, check) -> None:
    for pos in range(0, len(data), step):
        decoder_feed(data[pos:pos + step])
        check()


@settings(max_examples=300, deadline=None)
@given(chunk_traffic)
def test_fuzz_chunk_decoder_never_holds_more_than_its_bound(traffic):
    chunk_size, messages, garbage, step = traffic
    decoder = ChunkDecoder(max_chunk_size=256, max_message_size=512, max_streams=4)
    assert decoder.max_buffered == 4 * 512 + 256 + chunks.MAX_HEADER

    def feed(piece):
        with contextlib.suppress(ChunkError):
            decoder.feed(piece)

    def check():
        assert decoder.buffered <= decoder.max_buffered
    fed(feed, interleaved(chunk_size, messages, garbage), step, check)


def test_a_broken_stream_releases_what_it_held():
    decoder = ChunkDecoder(max_chunk_size=256, max_message_size=512, max_streams=4)
    data = interleaved(100, [(3, 9, 500), (4, 8, 500)], b"")
    decoder.feed(data[:16 + 2 * 112])  # Set Chunk Size, the first chunk of each message
    assert decoder.buffered == 200  # two messages under way
    with pytest.raises(ChunkError):
        decoder.feed(b"\xc9" + bytes(3000))  # fmt 3 on a stream that never began
    assert decoder.buffered == 0


def test_interleaved_traffic_within_the_caps_decodes():
    data = interleaved(100, [(3, 9, 500), (4, 8, 300), (5, 20, 0)], b"")
    decoder = ChunkDecoder(max_chunk_size=256, max_message_size=512, max_streams=4)
    got = [(m.csid, len(m.payload)) for m in decoder.feed(data) if m.type_id != 1]
    assert sorted(got) == [(3, 500), (4, 300), (5, 0)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(2, 400), st.sampled_from([4, 8, 9, 15, 18, 20, 22]),
                          st.binary(max_size=700),
                          st.integers(0, 2**32 - 1)), max_size=6),
       st.integers(1, 1000), st.integers(1, 50))
def test_fuzz_chunk_round_trip(messages, chunk_size, split):
    enc = ChunkEncoder()
    data = enc.set_chunk_size(chunk_size)
    originals = [Message(t, p, 1, ts, csid) for csid, t, p, ts in messages]
    for m in originals:
        data += enc.encode(m)
    decoder = ChunkDecoder(max_chunk_size=1000, max_message_size=1000, max_streams=500)
    out = []
    for i in range(0, len(data), split):
        out += decoder.feed(data[i:i + split])
    assert [(m.type_id, m.payload, m.timestamp, m.csid) for m in out[1:]] == [
        (m.type_id, m.payload, m.timestamp, m.csid) for m in originals]


# -- connections as two in-memory peers -----------------------------------------
def pump(a, b):
    """Move bytes both ways until quiet; returns the events of each side."""
    ea, eb = [], []
    for _ in range(10):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            break
        eb += b.receive_data(out_a) if out_a else []
        ea += a.receive_data(out_b) if out_b else []
    return ea, eb


def test_handshake_s1_version_zero_s2_echoes_c1_with_real_ffmpeg_c1():
    c0c1 = captured("ffmpeg-c0c1.hex")
    server = ServerConnection(random=lambda n: b"\xab" * n, time_ms=7)
    assert server.receive_data(c0c1) == []
    reply = server.data_to_send()
    assert len(reply) == 1 + 1536 * 2 and reply[0] == 3
    s1, s2 = reply[1:1537], reply[1537:]
    assert s1[:4] == struct.pack("!I", 7) and s1[4:8] == b"\0\0\0\0"
    assert s2 == c0c1[1:]
    assert server.receive_data(s1) == [HandshakeCompleted()]  # C2
    [event] = server.receive_data(captured("ffmpeg-connect.hex"))
    assert isinstance(event, CommandReceived) and event.command.name == "connect"


def test_redirect_rejection_between_in_memory_peers():
    client, server = ClientConnection(), ServerConnection()
    ce, se = pump(client, server)
    assert ce == [HandshakeCompleted()] and se == [HandshakeCompleted()]
    assert client.s2_matches_c1
    client.connect("redirect", "rtmp://lb:1935/redirect")
    _, se = pump(client, server)
    [connect] = [e.command for e in se if isinstance(e, CommandReceived)]
    url = "rtmp://edge1:1935/live"
    server.reject_connect(connect.transaction_id, status(
        "error", "NetConnection.Connect.Rejected", f"Connection rejected: redirect to {url}",
        ex={"code": 302.0, "redirect": url}))
    assert server.state is State.CLOSED
    ce, _ = pump(client, server)
    [error] = [e.command for e in ce if isinstance(e, CommandReceived)]
    assert error.name == "_error" and error.transaction_id == 1.0
    info = error.args[0]
    assert info["code"] == "NetConnection.Connect.Rejected"
    assert url in info["description"] and info["ex"] == {"code": 302.0, "redirect": url}
    assert [e.message.type_id for e in ce if isinstance(e, MessageReceived)] == [
        chunks.WINDOW_ACK_SIZE, chunks.SET_PEER_BANDWIDTH]


def test_server_acknowledges_after_the_peers_window():
    client, server = ClientConnection(), ServerConnection()
    pump(client, server)
    client.send(chunks.window_ack_size(3000))
    client.send(Message(chunks.AUDIO, b"a" * 4000, 1, 0, 4))
    server.receive_data(client.data_to_send())
    [ack] = ChunkDecoder().feed(server.data_to_send())
    assert ack.type_id == chunks.ACKNOWLEDGEMENT
    assert struct.unpack("!I", ack.payload)[0] == server.bytes_received > 3000
    client.send(Message(chunks.AUDIO, b"a" * 100, 1, 0, 4))
    server.receive_data(client.data_to_send())
    assert server.data_to_send() == b""  # not another window's worth yet


@pytest.mark.parametrize("first, reason", [(b"\x06" + bytes(1536), "encrypted RTMP"),
                                           (b"GET / HTTP/1.1\r\n", "not an RTMP handshake")])
def test_bad_handshake_fails_cleanly(first, reason):
    server = ServerConnection()
    [event] = server.receive_data(first)
    assert isinstance(event, ConnectionFailed) and reason in event.reason
    assert server.state is State.CLOSED and server.receive_data(b"more") == []


def test_garbage_after_handshake_fails_cleanly():
    client, server = ClientConnection(), ServerConnection(max_message_size=1024)
    pump(client, server)
    events = server.receive_data(b"\x03" + b"\xff" * 20)
    assert isinstance(events[-1], ConnectionFailed) and server.state is State.CLOSED


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_server_after_handshake_never_raises(data):
    client, server = ClientConnection(), ServerConnection(max_message_size=4096)
    pump(client, server)
    events = server.receive_data(data)
    assert all(not isinstance(e, ConnectionFailed) for e in events[:-1])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3500))
def test_fuzz_server_handshake_never_raises(data):
    server = ServerConnection()
    server.receive_data(data)
    assert server.buffered <= 2 * 1536 + 1  # at most the handshake it waits for


@settings(max_examples=200, deadline=None)
@given(chunk_traffic)
def test_fuzz_server_never_holds_more_than_its_bound(traffic):
    chunk_size, messages, garbage, step = traffic
    client = ClientConnection()
    server = ServerConnection(max_chunk_size=256, max_message_size=512)
    pump(client, server)
    bound = server.decoder.max_buffered

    def feed(piece):
        events = server.receive_data(piece)
        assert all(not isinstance(e, ConnectionFailed) for e in events[:-1])

    def check():
        assert server.buffered <= bound
    fed(feed, interleaved(chunk_size, messages, garbage), step, check)


def test_amf3_envelope_command_is_understood():
    inner = command_message("connect", 1.0, {"app": "x"}).payload
    cmd = parse_command(Message(chunks.COMMAND_AMF3, b"\x00" + inner))
    assert cmd.name == "connect" and cmd.command_object == {"app": "x"}


# -- redirect URLs and the nginx-rtmp stat page -----------------------------------
@pytest.mark.parametrize("app, address, scheme, port, expected", [
    (RtmpApp("redirect"), "edge1", "rtmp", 1935, "rtmp://edge1:1935/live"),
    (RtmpApp("redirect"), "edge1:19351", "rtmp", 1935, "rtmp://edge1:19351/live"),
    (RtmpApp("r", redirect_port=1936, redirect_app_name="tv"), "edge1:80", "rtmp", 1935,
     "rtmp://edge1:1936/tv"),
    (RtmpApp("r", redirect_scheme="rtmps"), "2001:db8::1", None, 443,
     "rtmps://[2001:db8::1]:443/live"),
    (RtmpApp("r"), "edge1", None, None, "rtmp://edge1/live"),
])
def test_edge_url(app, address, scheme, port, expected):
    assert edge_url(app, address, client_scheme=scheme, client_port=port) == expected


def test_edge_url_keeps_instance_and_query():
    name, instance, query = _split_app("redirect/inst?token=abc")
    assert (name, instance, query) == ("redirect", "/inst", "token=abc")
    assert edge_url(RtmpApp("redirect"), "e:1", client_scheme="rtmp", client_port=1,
                    instance=instance, query=query) == "rtmp://e:1/live/inst?token=abc"


NGINX_STAT = b"""<?xml version="1.0" encoding="utf-8" ?>
<rtmp><nginx_version>1.22.1</nginx_version>
<server>
 <application><name>live</name><live>
  <stream><name>a</name><nclients>3</nclients></stream>
  <stream><name>b</name><nclients>2</nclients></stream>
  <nclients>5</nclients></live></application>
 <application><name>vod</name><live><nclients>4</nclients></live></application>
</server>
<server><application><name>live</name><live><nclients>1</nclients></live></application></server>
</rtmp>"""


def test_nginx_rtmp_stat_sums_application_live_nclients():
    assert count_nginx_rtmp_clients(NGINX_STAT) == 10
    assert count_nginx_rtmp_clients(NGINX_STAT, frozenset({"live"})) == 6
    with pytest.raises(MonitorError, match="not XML"):
        count_nginx_rtmp_clients(b"<html")
    with pytest.raises(MonitorError, match="not <rtmp>"):
        count_nginx_rtmp_clients(b"<html/>")


def test_a_valid_command_before_garbage_in_one_segment_is_not_lost():
    client, server = ClientConnection(), ServerConnection()
    pump(client, server)
    client.connect("live", "rtmp://lb/live")
    events = server.receive_data(client.data_to_send() + b"\x13" + b"\xee" * 40)
    assert isinstance(events[0], CommandReceived) and events[0].command.name == "connect"
    assert isinstance(events[-1], ConnectionFailed) and server.state is State.CLOSED
    decoder = ChunkDecoder()
    good = ChunkEncoder().encode(Message(9, b"ok", csid=5))
    # a type 1 header on a chunk stream never opened: broken
    assert [m.payload for m in decoder.feed(good + b"\x49" + bytes(7))] == [b"ok"]
    with pytest.raises(ChunkError):  # the break is reported on the next call
        decoder.feed(b"")


async def test_relay_moves_every_byte_both_ways_and_passes_half_close():
    import asyncio
    import os
    import socket

    from lbmgmt.balancer.relay import relay

    loop = asyncio.get_running_loop()
    a1, a2 = socket.socketpair()
    b1, b2 = socket.socketpair()
    for s in (a1, a2, b1, b2):
        s.setblocking(False)
    task = asyncio.create_task(relay(a2, b1))
    up, down = os.urandom(3_000_000), os.urandom(1_000_000)

    async def send(sock, data):
        await loop.sock_sendall(sock, data)
        sock.shutdown(socket.SHUT_WR)

    async def receive(sock):
        got = bytearray()
        while chunk := await loop.sock_recv(sock, 1 << 16):
            got += chunk
        return bytes(got)

    _, _, got_up, got_down = await asyncio.gather(send(a1, up), send(b2, down),
                                                  receive(b2), receive(a1))
    assert got_up == up and got_down == down  # EOF arrived on both: half-close passed on
    assert await asyncio.wait_for(task, 5) == (len(up), len(down))
    for s in (a1, a2, b1, b2):
        s.close()
