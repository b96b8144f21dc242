"""The report's extension area: a format that can grow without dropping anyone.

Two in-memory peers (``ReportSealer``, ``ReportReceiver``); ``seal_payload``
builds payloads no ``Report`` of this version produces, as a newer edge would.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbmgmt.balancer.registry import ServerRegistry
from lbmgmt.status import (DatagramDropped, DropReason, EdgeState, Report, ReportAccepted,
                           ReportReceiver, ReportSealer, SharedKey)
from lbmgmt.status.wire import (EXTENSION_HEADER, HEADER_SIZE, MAX_ADDRESS, MAX_DATAGRAM,
                                TAG_SIZE)
from lbmgmt.status.wire import (EXT_AGENT, EXT_STREAMS, EXTENSIONS, MAX_EXTENSION_AREA,
                                MAX_EXTENSIONS, MAX_STREAMS, PAYLOAD, PAYLOAD_FIXED,
                                MalformedPayload, decode_payload, encode_extension,
                                encode_payload, fit)
from lbmgmt.streams import stream_key

KEY = SharedKey("extensions")
NOW = 1_800_000_000.0
BASE = Report(EdgeState.RUNNING, "edge1.example.net:1935", load=3, interval_ms=2500)


def pair() -> tuple[ReportSealer, ReportReceiver]:
    return ReportSealer(uuid.uuid4()), ReportReceiver(KEY)


def test_a_report_with_no_extension_is_the_old_layout_byte_for_byte():
    payload = encode_payload(BASE)
    address = BASE.address.encode()
    assert payload == PAYLOAD.pack(0, 0, 2500, 3.0, 0.0, len(address)) + address
    assert len(payload) == PAYLOAD_FIXED + len(address)


def test_an_unknown_extension_is_skipped_and_the_report_accepted():
    sealer, rx = pair()
    newer = (encode_payload(BASE) + encode_extension(200, b"a field from the future")
             + encode_extension(201, b""))
    event = rx.receive(sealer.seal_payload(newer, KEY, now=NOW), NOW)
    assert isinstance(event, ReportAccepted)
    assert event.report == BASE
    assert rx.dropped == 0 and rx.accepted == 1


def test_known_extensions_are_read_around_unknown_ones():
    sealer, rx = pair()
    payload = (encode_payload(BASE) + encode_extension(250, b"\xff" * 40)
               + encode_extension(EXT_AGENT, b"lbmgmt/9.9") + encode_extension(77, b"x"))
    event = rx.receive(sealer.seal_payload(payload, KEY, now=NOW), NOW)
    assert isinstance(event, ReportAccepted) and event.report.agent == "lbmgmt/9.9"


def test_the_agent_extension_round_trips_and_reaches_the_registry_whole():
    sealer, rx = pair()
    report = Report(EdgeState.RUNNING, "[2001:db8::1]:1935", load=1, interval_ms=100,
                    agent="lbmgmt/0.1.0")
    event = rx.receive(sealer.seal(report, KEY, now=NOW), NOW)
    assert isinstance(event, ReportAccepted) and event.report == report
    registry = ServerRegistry()
    registry.apply(event, now=5.0)
    entry = registry.get(sealer.guid)
    assert entry is not None and entry.report is event.report  # kept, not copied
    assert (entry.address, entry.load, entry.interval) == ("[2001:db8::1]:1935", 1, 0.1)


@pytest.mark.parametrize("area, why", [
    (b"\x01", "truncated extension header"),
    (b"\x09\x00\x05abc", "runs past the end"),
    (encode_extension(EXT_AGENT, b"a") * 2, "repeated"),
    (encode_extension(EXT_AGENT, b""), "agent"),  # a known type must decode
    (encode_extension(EXT_AGENT, b"\xff\xfe"), "agent"),
    (encode_extension(EXT_AGENT, b"x" * 65), "agent"),
    (encode_extension(99, b"x" * (MAX_EXTENSION_AREA - 2)), "area over"),
    (encode_extension(99, b"") * (MAX_EXTENSIONS + 1), "more than"),
])
def test_a_bad_extension_area_is_malformed_and_counted(area: bytes, why: str):
    sealer, rx = pair()
    event = rx.receive(sealer.seal_payload(encode_payload(BASE) + area, KEY, now=NOW), NOW)
    assert isinstance(event, DatagramDropped) and event.reason is DropReason.MALFORMED
    assert why in event.detail
    assert rx.drops[DropReason.MALFORMED] == 1 and rx.accepted == 0


def test_the_area_limits_are_inclusive():
    full = encode_extension(99, b"x" * (MAX_EXTENSION_AREA - 3))
    assert len(full) == MAX_EXTENSION_AREA
    assert decode_payload(encode_payload(BASE) + full) == BASE
    assert decode_payload(encode_payload(BASE) + encode_extension(99, b"") * MAX_EXTENSIONS) == BASE


KNOWN = {ext.type for ext in EXTENSIONS}


def test_unhealthy_goes_through_and_has_its_own_size_limit():
    report = Report(EdgeState.PAUSED, "e:1", load=0, interval_ms=1,
                    unhealthy="monitor: cannot read http://127.0.0.1:8080/stat: refused")
    assert decode_payload(encode_payload(report)) == report
    with pytest.raises(ValueError, match="unhealthy"):
        Report(EdgeState.PAUSED, "e:1", load=0, interval_ms=1, unhealthy="x" * 201)


def test_a_report_refuses_an_extension_value_it_cannot_carry():
    with pytest.raises(ValueError, match="agent"):
        Report(EdgeState.RUNNING, "e:1", load=0, interval_ms=1, agent="x" * 65)
    with pytest.raises(ValueError, match="agent"):
        Report(EdgeState.RUNNING, "e:1", load=0, interval_ms=1, agent="")


@settings(max_examples=300, deadline=None)
@given(tlvs=st.lists(st.tuples(st.integers(2, 255).filter(lambda t: t not in KNOWN),
                               st.binary(max_size=40)), max_size=8),
       agent=st.none() | st.text(min_size=1, max_size=16))
def test_any_unknown_tlvs_leave_the_known_fields_as_sent(tlvs, agent):
    report = Report(EdgeState.PAUSED, "e.example:1935", load=2.5, interval_ms=10, agent=agent)
    area = b"".join(encode_extension(t, v) for t, v in tlvs)
    assert decode_payload(encode_payload(report) + area) == report


@settings(max_examples=500, deadline=None)
@given(tail=st.binary(max_size=600))
def test_any_bytes_after_the_address_decode_or_are_malformed_never_raise_otherwise(tail):
    sealer, rx = pair()
    event = rx.receive(sealer.seal_payload(encode_payload(BASE) + tail, KEY, now=NOW), NOW)
    if isinstance(event, DatagramDropped):
        assert event.reason is DropReason.MALFORMED
    else:
        assert event.report.address == BASE.address


def test_every_known_extension_at_its_longest_fits_the_area_and_the_datagram():
    # (but the stream keys, which take the room left: the next test)
    area = sum(EXTENSION_HEADER.size + ext.codec.max_size for ext in EXTENSIONS
               if ext.name != "streams")
    assert area <= MAX_EXTENSION_AREA
    assert HEADER_SIZE + PAYLOAD_FIXED + MAX_ADDRESS + MAX_EXTENSION_AREA + TAG_SIZE <= (
        MAX_DATAGRAM)


def _longest(**fields):
    return Report(EdgeState.RUNNING, "e" * MAX_ADDRESS, load=1.0, interval_ms=2500,
                  capacity=100.0, agent="a" * 64, group="g" * 64, bandwidth=1e9,
                  bandwidth_limit=2e9, max_clients=1000, **fields)


def test_fit_keeps_every_stream_key_that_fits_and_drops_the_last_ones():
    keys = tuple(range(1, MAX_STREAMS + 1))
    short = Report(EdgeState.RUNNING, "e.example:1935", load=1.0, interval_ms=2500,
                   agent="lbmgmt/0.3.0", streams=keys)
    assert fit(short) is short  # a typical report carries all 64
    for report in (_longest(streams=keys), _longest(streams=keys, unhealthy="u" * 200,
                                                   private_address="p" * 255)):
        fitted = fit(report)
        payload = encode_payload(fitted)
        area = len(payload) - PAYLOAD_FIXED - MAX_ADDRESS
        assert area <= MAX_EXTENSION_AREA
        assert HEADER_SIZE + len(payload) + TAG_SIZE <= MAX_DATAGRAM
        kept = fitted.streams or ()
        assert kept == keys[:len(kept)]  # the most watched kept, in order
        if 0 < len(kept) < len(keys):  # one more would not have fitted
            bigger = replace(fitted, streams=keys[:len(kept) + 1])
            assert len(encode_payload(bigger)) - PAYLOAD_FIXED - MAX_ADDRESS > (
                MAX_EXTENSION_AREA) or HEADER_SIZE + len(encode_payload(bigger)) + (
                TAG_SIZE) > MAX_DATAGRAM
        assert decode_payload(payload) == fitted
    # every other field at its longest still leaves room for some
    assert len(fit(_longest(streams=keys, unhealthy="u" * 200,
                            private_address="p" * 255)).streams or ()) >= 16


@pytest.mark.parametrize("raw", [b"", b"\x00" * 7, b"\x00" * 12, b"\x00" * 8 * 65])
def test_a_streams_value_not_in_whole_keys_or_too_many_is_malformed(raw):
    payload = encode_payload(BASE) + encode_extension(EXT_STREAMS, raw)
    with pytest.raises(MalformedPayload):
        decode_payload(payload)


@pytest.mark.parametrize("streams", [(), (1, 1), (-1,), (1 << 64,), [1], (True,)])
def test_a_report_refuses_stream_keys_it_cannot_carry(streams):
    with pytest.raises(ValueError, match="streams"):
        Report(EdgeState.RUNNING, "e:1", load=0.0, interval_ms=1, streams=streams)


def test_stream_keys_and_max_clients_round_trip():
    report = Report(EdgeState.RUNNING, "e:1", load=0.0, interval_ms=1,
                    streams=(stream_key("live/a"), stream_key("live/b")), max_clients=50)
    assert decode_payload(encode_payload(report)) == report
