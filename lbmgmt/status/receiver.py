"""Receiver side of the status protocol: authenticate, de-duplicate, count drops.

The replay rule is checked on the header before authentication (it only reads
state, so it costs no crypto); everything else after it: only datagrams that
carry the key can touch replay state, and a forged datagram under a new header
is always counted as ``bad-auth``.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lbmgmt.status.keys import SharedKey, sender_cipher
from lbmgmt.status.wire import (HEADER, HEADER_SIZE, MAGIC, MAX_DATAGRAM, MIN_DATAGRAM,
                                VERSION, MalformedPayload, Report, decode_payload,
                                nonce_for)

log = logging.getLogger(__name__)

DEFAULT_MAX_AGE = 30.0
RETIRED_BOOTS = 8


class DropReason(enum.StrEnum):
    BAD_AUTH = "bad-auth"
    MALFORMED = "malformed"
    REPLAY = "replay"
    STALE = "stale"
    OVERSIZE = "oversize"
    THROTTLED = "throttled"  # (counted by the balancer: dropped before any check, flood)


@dataclass(frozen=True, slots=True)
class ReportAccepted:
    guid: uuid.UUID
    boot_id: bytes
    sequence: int
    sent_at: float  # sender's wall clock, seconds
    report: Report
    received_at: float | None = None  # receiver's wall clock: with sent_at, the transit time
    payload: bytes = b""  # the report as it came (decrypted): what a state file keeps


@dataclass(frozen=True, slots=True)
class DatagramDropped:
    reason: DropReason
    detail: str
    # What the header says, for telling an operator who it was: the GUID is only claimed
    # (unauthenticated) for BAD_AUTH, known for STALE, REPLAY and a payload that does not
    # decode; ``offset`` is the sender's clock less ours, seconds (STALE).
    guid: uuid.UUID | None = None
    offset: float | None = None


@dataclass(slots=True)
class _Peer:
    """Replay state of one sender GUID."""

    boot_id: bytes
    sequence: int
    timestamp_ms: int
    last_seen: float
    retired: deque[bytes] = field(default_factory=lambda: deque(maxlen=RETIRED_BOOTS))


class ReportReceiver:
    """Opens datagrams sealed with one shared key.

    Replay rule, per GUID: within a boot, the sequence must grow; a new boot id
    is taken only if its timestamp is later than the last accepted one and it
    was not seen before, so an old boot's datagrams cannot be replayed to
    resurrect a restarted or stopped edge. ``max_age`` bounds how far a
    timestamp may be from ``now`` either way (clock skew included).
    """

    def __init__(self, key: SharedKey, *, max_age: float = DEFAULT_MAX_AGE,
                 max_datagram: int = MAX_DATAGRAM, cipher_cache: int = 4096) -> None:
        self._master = key.master()
        self.max_age = max_age
        self.max_datagram = max_datagram
        self._cache_size = cipher_cache
        self._ciphers: OrderedDict[bytes, AESGCM] = OrderedDict()
        self._peers: dict[bytes, _Peer] = {}
        self.accepted = 0
        self.drops: Counter[DropReason] = Counter({reason: 0 for reason in DropReason})

    def knows(self, data: bytes) -> bool:
        """The datagram's header names a sender process this receiver has opened a report
        of lately (its cipher is cached): opening it costs one AES-GCM check, no key
        derivation. (Anyone can copy a header, so this says "cheap", not "genuine".)"""
        return data[4:28] in self._ciphers if len(data) >= HEADER_SIZE else False

    @property
    def master_key(self) -> bytes:
        """The stretched shared key (for MACs of what this receiver's owner keeps)."""
        return self._master

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def receive(self, data: bytes, now: float) -> ReportAccepted | DatagramDropped:
        """``now`` is the receiver's wall clock in seconds. Never raises."""
        try:
            event = self._open(data, now)
        except Exception:  # a bug must not take the listener down; it stays visible
            log.exception("status datagram handling failed")
            event = DatagramDropped(DropReason.MALFORMED, "internal error")
        if isinstance(event, DatagramDropped):
            self.drops[event.reason] += 1
        else:
            self.accepted += 1
        return event

    def _open(self, data: bytes, now: float) -> ReportAccepted | DatagramDropped:
        if len(data) > self.max_datagram:
            return DatagramDropped(DropReason.OVERSIZE, f"{len(data)} bytes")
        if len(data) < MIN_DATAGRAM:
            return DatagramDropped(DropReason.MALFORMED, f"only {len(data)} bytes")
        magic, version, flags, guid, boot_id, seq, ts_ms = HEADER.unpack_from(data)
        if magic != MAGIC:
            return DatagramDropped(DropReason.MALFORMED, "not a status datagram")
        if version != VERSION:  # checked before authentication: its crypto may not be ours
            return DatagramDropped(DropReason.MALFORMED, f"unsupported version {version}")
        if flags != 0:
            return DatagramDropped(DropReason.MALFORMED, f"unknown header flags {flags:#04x}")
        # The replay rule first, on the header alone: it reads only what good reports wrote
        # and changes nothing, so a replayed datagram (or a forged one under an old header)
        # costs no crypto at all.
        peer = self._peers.get(guid)
        if peer is not None:
            if boot_id == peer.boot_id:
                if seq <= peer.sequence:
                    return DatagramDropped(DropReason.REPLAY, f"sequence {seq} not newer",
                                           guid=uuid.UUID(bytes=guid))
            elif boot_id in peer.retired or ts_ms <= peer.timestamp_ms:
                return DatagramDropped(DropReason.REPLAY, "older boot of this sender",
                                       guid=uuid.UUID(bytes=guid))
        header = data[:HEADER_SIZE]
        cache_key = guid + boot_id
        cipher = self._ciphers.get(cache_key)
        known = cipher is not None
        if cipher is None:
            cipher = sender_cipher(self._master, guid, boot_id)
        try:
            plaintext = cipher.decrypt(nonce_for(seq), data[HEADER_SIZE:], header)
        except InvalidTag:
            return DatagramDropped(DropReason.BAD_AUTH, "authentication failed",
                                   guid=uuid.UUID(bytes=guid))
        if known:
            self._ciphers.move_to_end(cache_key)
        else:
            self._ciphers[cache_key] = cipher
            if len(self._ciphers) > self._cache_size:
                self._ciphers.popitem(last=False)

        if abs(now * 1000 - ts_ms) > self.max_age * 1000:
            offset = ts_ms / 1000 - now
            return DatagramDropped(DropReason.STALE, f"timestamp {offset:+.1f}s off",
                                   guid=uuid.UUID(bytes=guid), offset=offset)
        try:
            report = decode_payload(plaintext)
        except MalformedPayload as exc:
            return DatagramDropped(DropReason.MALFORMED, str(exc), guid=uuid.UUID(bytes=guid))

        if peer is None:
            self._peers[guid] = _Peer(boot_id, seq, ts_ms, now)
        else:
            if boot_id != peer.boot_id:
                peer.retired.append(peer.boot_id)
                peer.boot_id = boot_id
            peer.sequence, peer.timestamp_ms, peer.last_seen = seq, ts_ms, now
            self._peers[guid] = self._peers.pop(guid)  # to the end: latest heard last
        return ReportAccepted(uuid.UUID(bytes=guid), boot_id, seq, ts_ms / 1000, report,
                              received_at=now, payload=plaintext)

    def prune(self, now: float) -> int:
        """Forget senders silent for twice ``max_age``: their datagrams are stale by then."""
        horizon = now - 2 * self.max_age
        # Peers are kept in the order last heard, so the silent ones are at the front:
        # O(pruned), not a walk over every sender four times a second. (A wall clock
        # stepped back only delays a prune.)
        gone = []
        for guid, peer in self._peers.items():
            if peer.last_seen >= horizon:
                break
            gone.append(guid)
        ciphers = self._ciphers
        for guid in gone:
            peer = self._peers.pop(guid)
            # (their ciphers too: the cache would hold them until 4096 others came)
            ciphers.pop(guid + peer.boot_id, None)
            for boot_id in peer.retired:
                ciphers.pop(guid + boot_id, None)
        return len(gone)

    @property
    def peer_count(self) -> int:
        return len(self._peers)

    # -- replay marks kept across restarts (lbmgmt/balancer/state.py) ------------------
    def marks(self) -> Iterator[ReplayMark]:
        """What this receiver knows of each sender's datagrams, to be kept across a
        restart: what a restarted receiver ``restore_mark``s drops what it would have."""
        for guid, peer in list(self._peers.items()):
            yield ReplayMark(guid, peer.boot_id, peer.sequence, peer.timestamp_ms,
                             peer.last_seen, tuple(peer.retired))

    def restore_mark(self, mark: ReplayMark) -> None:
        """Take a kept mark (a sender heard since keeps what it has: it is newer)."""
        if mark.guid in self._peers:
            return
        peer = _Peer(mark.boot_id, mark.sequence, mark.timestamp_ms, mark.last_seen)
        peer.retired.extend(mark.retired)
        self._peers[mark.guid] = peer


@dataclass(frozen=True, slots=True)
class ReplayMark:
    """One sender's replay state: its current boot, the last sequence and timestamp taken
    from it, when it was last heard (receiver's wall clock) and its retired boots."""

    guid: bytes
    boot_id: bytes
    sequence: int
    timestamp_ms: int
    last_seen: float
    retired: tuple[bytes, ...]
