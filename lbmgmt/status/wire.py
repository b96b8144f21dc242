"""Byte layouts of the status datagram (docs/protocol.md is the reference).

The header travels in clear because the receiver needs the sender's GUID and
boot id to pick the key, and it is bound to the ciphertext as associated data,
so none of it can be changed without failing authentication.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass

MAGIC = b"LB"
VERSION = 1
HEADER = struct.Struct("!2sBB16s8sQQ")  # magic, version, flags, guid, boot id, seq, ts ms
HEADER_SIZE = HEADER.size  # 44
TAG_SIZE = 16
PAYLOAD = struct.Struct("!BBIddH")  # state, flags, interval ms, load, capacity, addr len
PAYLOAD_FIXED = PAYLOAD.size  # 24
MAX_ADDRESS = 255
MAX_DATAGRAM = 1200  # stays under any path MTU; a report is ~100 bytes
MIN_DATAGRAM = HEADER_SIZE + PAYLOAD_FIXED + 1 + TAG_SIZE
FLAG_CAPACITY = 0x01


class EdgeState(enum.IntEnum):
    RUNNING = 0
    PAUSED = 1  # keeps reporting, takes no new clients
    STOPPING = 2  # last report before exit: leave the pool now


@dataclass(frozen=True, slots=True)
class Report:
    """What an edge says about itself in one datagram."""

    state: EdgeState
    address: str
    load: float
    interval_ms: int
    capacity: float | None = None

    def __post_init__(self) -> None:
        raw = self.address.encode("utf-8")
        if not 1 <= len(raw) <= MAX_ADDRESS:
            raise ValueError(f"redirect address must be 1 to {MAX_ADDRESS} bytes of UTF-8")
        if not (math.isfinite(self.load) and self.load >= 0):
            raise ValueError(f"load must be a finite number >= 0, not {self.load!r}")
        if self.capacity is not None and not (math.isfinite(self.capacity) and self.capacity > 0):
            raise ValueError(f"capacity must be a finite number > 0, not {self.capacity!r}")
        if not 1 <= self.interval_ms <= 0xFFFFFFFF:
            raise ValueError("interval must be 1 ms or more")


class MalformedPayload(ValueError):
    pass


def encode_payload(report: Report) -> bytes:
    raw = report.address.encode("utf-8")
    flags = FLAG_CAPACITY if report.capacity is not None else 0
    return PAYLOAD.pack(report.state, flags, report.interval_ms, float(report.load),
                        report.capacity or 0.0, len(raw)) + raw


def decode_payload(data: bytes) -> Report:
    if len(data) < PAYLOAD_FIXED:
        raise MalformedPayload("payload too short")
    state, flags, interval_ms, load, capacity, length = PAYLOAD.unpack_from(data)
    if len(data) != PAYLOAD_FIXED + length:
        raise MalformedPayload("address length does not match payload size")
    if flags & ~FLAG_CAPACITY:
        raise MalformedPayload("unknown payload flags")
    try:
        return Report(state=EdgeState(state),
                      address=data[PAYLOAD_FIXED:].decode("utf-8"),
                      load=load, interval_ms=interval_ms,
                      capacity=capacity if flags & FLAG_CAPACITY else None)
    except ValueError as exc:  # bad enum, bad UTF-8, out-of-range number
        raise MalformedPayload(str(exc)) from None


def nonce_for(sequence: int) -> bytes:
    """Sequence numbers never repeat under one per-sender key, so they are the nonce."""
    return b"\x00\x00\x00\x00" + sequence.to_bytes(8, "big")
