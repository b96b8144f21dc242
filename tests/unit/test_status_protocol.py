"""The status protocol, sans-IO: a sealer and a receiver as two in-memory peers."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbmgmt.status import (DatagramDropped, DropReason, EdgeState, Report, ReportAccepted,
                           ReportReceiver, ReportSealer, SharedKey)
from lbmgmt.status import receiver as receiver_module
from lbmgmt.status.keys import sender_cipher
from lbmgmt.status.wire import HEADER, MAGIC, VERSION, nonce_for

KEY = SharedKey("correct horse battery staple")
OTHER = SharedKey("wrong key")
NOW = 1_800_000_000.0
REPORT = Report(EdgeState.RUNNING, "edge1.example.net:1935", load=12.5, interval_ms=2500,
                capacity=400)


def pair(**kw) -> tuple[ReportSealer, ReportReceiver]:
    return ReportSealer(uuid.uuid4()), ReportReceiver(KEY, **kw)


def test_round_trip_carries_every_field():
    sealer, rx = pair()
    event = rx.receive(sealer.seal(REPORT, KEY, now=NOW), NOW + 0.01)
    assert isinstance(event, ReportAccepted)
    assert event.report == REPORT
    assert event.guid == sealer.guid and event.boot_id == sealer.boot_id
    assert event.sequence == 1 and event.sent_at == pytest.approx(NOW, abs=0.001)
    assert rx.accepted == 1 and rx.dropped == 0


def test_round_trip_without_capacity_and_unicode_address():
    sealer, rx = pair()
    report = Report(EdgeState.PAUSED, "édge-ü.example:1935", load=0, interval_ms=10)
    event = rx.receive(sealer.seal(report, KEY, now=NOW), NOW)
    assert isinstance(event, ReportAccepted) and event.report == report
    assert event.report.capacity is None


def test_wrong_key_is_bad_auth():
    sealer, rx = pair()
    event = rx.receive(sealer.seal(REPORT, OTHER, now=NOW), NOW)
    assert event == DatagramDropped(DropReason.BAD_AUTH, "authentication failed",
                                    guid=sealer.guid)  # (claimed: unauthenticated)
    assert rx.drops[DropReason.BAD_AUTH] == 1 and rx.accepted == 0


def test_every_flipped_byte_fails_to_open():
    sealer, rx = pair()
    datagram = sealer.seal(REPORT, KEY, now=NOW)
    for i in range(len(datagram)):
        for bit in (0x01, 0x80):
            forged = bytearray(datagram)
            forged[i] ^= bit
            event = rx.receive(bytes(forged), NOW)
            assert isinstance(event, DatagramDropped), f"byte {i} bit {bit:#x} was accepted"
            assert event.reason in (DropReason.BAD_AUTH, DropReason.MALFORMED)
    # untouched, it still opens: the flips were what failed
    assert isinstance(rx.receive(datagram, NOW), ReportAccepted)


def test_every_truncation_fails_to_open():
    sealer, rx = pair()
    datagram = sealer.seal(REPORT, KEY, now=NOW)
    for length in range(len(datagram)):
        event = rx.receive(datagram[:length], NOW)
        assert isinstance(event, DatagramDropped)
        assert event.reason in (DropReason.BAD_AUTH, DropReason.MALFORMED)
    assert rx.accepted == 0


def test_replayed_and_older_sequences_are_dropped():
    sealer, rx = pair()
    first = sealer.seal(REPORT, KEY, now=NOW)
    second = sealer.seal(REPORT, KEY, now=NOW + 1)
    assert isinstance(rx.receive(second, NOW + 1), ReportAccepted)
    assert rx.receive(second, NOW + 1).reason is DropReason.REPLAY
    assert rx.receive(first, NOW + 1).reason is DropReason.REPLAY
    assert rx.drops[DropReason.REPLAY] == 2


def test_stale_and_future_timestamps_are_dropped():
    sealer, rx = pair(max_age=30)
    assert rx.receive(sealer.seal(REPORT, KEY, now=NOW - 31), NOW).reason is DropReason.STALE
    assert rx.receive(sealer.seal(REPORT, KEY, now=NOW + 31), NOW).reason is DropReason.STALE
    assert isinstance(rx.receive(sealer.seal(REPORT, KEY, now=NOW - 29), NOW), ReportAccepted)
    assert rx.drops[DropReason.STALE] == 2


def test_oversize_is_dropped_before_any_work():
    _, rx = pair()
    assert rx.receive(b"\0" * 1201, NOW).reason is DropReason.OVERSIZE


def test_restarted_sender_is_taken_and_its_old_boot_cannot_come_back():
    guid = uuid.uuid4()
    old, rx = ReportSealer(guid), ReportReceiver(KEY)
    old_running = old.seal(REPORT, KEY, now=NOW)
    assert isinstance(rx.receive(old_running, NOW), ReportAccepted)
    new = ReportSealer(guid)  # restart: same GUID, new boot, sequence from 1 again
    event = rx.receive(new.seal(REPORT, KEY, now=NOW + 2), NOW + 2)
    assert isinstance(event, ReportAccepted) and event.sequence == 1
    # an attacker replays the old boot's next datagram, still inside the age window
    later_old = old.seal(REPORT, KEY, now=NOW + 3)
    assert rx.receive(later_old, NOW + 3).reason is DropReason.REPLAY
    assert rx.receive(old_running, NOW + 3).reason is DropReason.REPLAY


def test_authenticated_but_malformed_payload_is_counted():
    guid, boot = uuid.uuid4(), b"\1" * 8
    header = HEADER.pack(MAGIC, VERSION, 0, guid.bytes, boot, 1, int(NOW * 1000))
    cipher = sender_cipher(KEY.master(), guid.bytes, boot)
    bad_state = bytes([9, 0]) + bytes(22) + b"\x00\x01x"
    rx = ReportReceiver(KEY)
    event = rx.receive(header + cipher.encrypt(nonce_for(1), bad_state, header), NOW)
    assert event.reason is DropReason.MALFORMED
    assert rx.peer_count == 0  # a malformed payload never touches replay state


def test_unknown_version_is_malformed():
    sealer, rx = pair()
    datagram = bytearray(sealer.seal(REPORT, KEY, now=NOW))
    datagram[2] = 2
    assert rx.receive(bytes(datagram), NOW).reason is DropReason.MALFORMED


def test_one_cipher_per_sender_not_per_datagram(monkeypatch):
    calls = []
    real = receiver_module.sender_cipher
    monkeypatch.setattr(receiver_module, "sender_cipher",
                        lambda *a: calls.append(a) or real(*a))
    sealer, rx = pair()
    for i in range(50):
        assert isinstance(rx.receive(sealer.seal(REPORT, KEY, now=NOW + i), NOW + i),
                          ReportAccepted)
    assert len(calls) == 1


def test_prune_forgets_silent_senders_after_twice_the_window():
    sealer, rx = pair(max_age=10)
    rx.receive(sealer.seal(REPORT, KEY, now=NOW), NOW)
    assert rx.prune(NOW + 19) == 0 and rx.peer_count == 1
    assert rx.prune(NOW + 21) == 1 and rx.peer_count == 0


def test_shared_key_never_shows_itself():
    assert "staple" not in repr(KEY) and "staple" not in str(KEY)
    assert "staple" not in f"{KEY!r} {KEY}"
    with pytest.raises(ValueError):
        SharedKey("   ")


@pytest.mark.parametrize("kwargs", [
    {"address": ""}, {"address": "x" * 256}, {"load": -1.0}, {"load": float("nan")},
    {"capacity": 0.0}, {"interval_ms": 0},
])
def test_report_rejects_values_it_could_not_carry(kwargs):
    fields = dict(state=EdgeState.RUNNING, address="a", load=1.0, interval_ms=1000) | kwargs
    with pytest.raises(ValueError):
        Report(**fields)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=1500))
def test_fuzz_arbitrary_bytes_never_raise_or_get_in(data):
    rx = ReportReceiver(KEY)
    event = rx.receive(data, NOW)
    assert isinstance(event, DatagramDropped)
    assert rx.accepted == 0 and rx.peer_count == 0 and rx.dropped == 1


_VALID = ReportSealer(uuid.UUID(int=7), boot_id=b"\2" * 8).seal(REPORT, KEY, now=NOW)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(1, 255)),
                min_size=1, max_size=8))
def test_fuzz_mutated_valid_datagrams_never_get_in(mutations):
    data = bytearray(_VALID)
    for index, xor in mutations:
        data[index] ^= xor
    rx = ReportReceiver(KEY)
    event = rx.receive(bytes(data), NOW)
    if bytes(data) != _VALID:
        assert isinstance(event, DatagramDropped)
