"""Byte layouts of the status datagram (docs/protocol.md is the reference).

The header travels in clear because the receiver needs the sender's GUID and
boot id to pick the key, and it is bound to the ciphertext as associated data,
so none of it can be changed without failing authentication.

The sealed payload is a fixed part, the redirect address, then an extension
area of TLVs (type u8, length u16, value) that runs to the end of the payload.
``EXTENSIONS`` is the one table of the types this version knows: a new report
field is a ``Report`` field (keyword-only, ``None`` meaning "not sent") plus one
row there. Unknown types are skipped, so edges can grow their reports ahead of
their balancers; a report with no extension field set has no extension area and
is byte for byte the layout of the versions before the area existed.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import KW_ONLY, dataclass, replace
from typing import Any, Protocol

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

EXTENSION_HEADER = struct.Struct("!BH")  # type, value length
# Limits of the extension area (headers included). Every known extension at its longest
# fits it (a test adds them up), but for the stream keys, which take the room left
# (``fit``: 64 keys in a typical report, fewer beside a long private address and
# unhealthy reason); and with the longest address a report still fits
# MAX_DATAGRAM: 44 + 24 + 255 + 768 + 16 = 1107 bytes. (512 until the group, private
# address and bandwidth types: an area over 512 bytes, which only a long private address
# and a long unhealthy reason together make, needs a balancer of that release or later.)
MAX_EXTENSION_AREA = 768
MAX_EXTENSIONS = 32  # TLVs per payload, known and unknown together


class EdgeState(enum.IntEnum):
    RUNNING = 0
    PAUSED = 1  # keeps reporting, takes no new clients
    STOPPING = 2  # last report before exit: leave the pool now


class MalformedPayload(ValueError):
    pass


# -- extension value codecs ----------------------------------------------------------------

class Codec(Protocol):
    """How one extension's value is checked, written and read."""

    @property
    def max_size(self) -> int:
        """The longest value in bytes (the table's sizes must fit MAX_EXTENSION_AREA)."""
        ...

    def check(self, value: Any) -> None:
        """Raise ValueError if ``value`` cannot be carried (called by ``Report``)."""

    def encode(self, value: Any) -> bytes: ...

    def decode(self, raw: bytes) -> Any:
        """The value of ``raw``; ValueError (MalformedPayload for a bad size) if none.

        Range checks are ``check``'s: ``Report`` runs it on decoded values too.
        """


@dataclass(frozen=True, slots=True)
class Utf8:
    """Text: ``min_size`` to ``max_size`` bytes of UTF-8; ``address``: a host[:port] that
    goes into URLs and answers as it is, so no control character, space or blank."""

    max_size: int
    min_size: int = 1
    address: bool = False

    def check(self, value: Any) -> None:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {type(value).__name__}")
        if not self.min_size <= len(value.encode("utf-8")) <= self.max_size:
            raise ValueError(f"must be {self.min_size} to {self.max_size} bytes of UTF-8")
        if self.address and not _is_address_text(value):
            raise ValueError("must be an address without spaces or control characters")

    def encode(self, value: Any) -> bytes:
        return str(value).encode("utf-8")

    def decode(self, raw: bytes) -> str:
        if not self.min_size <= len(raw) <= self.max_size:
            raise MalformedPayload(f"{len(raw)} bytes, not {self.min_size} to {self.max_size}")
        return raw.decode("utf-8")  # UnicodeDecodeError is a ValueError


def _is_address_text(text: str) -> bool:
    return all(c > " " and c != "\x7f" for c in text)


_FLOAT_FORMATS = frozenset("efd")


@dataclass(frozen=True, slots=True)
class Number:
    """One big-endian number of ``struct`` format ``fmt`` ("d" double, "I" u32, "Q" u64…):
    finite, at least ``minimum`` (more than it if ``exclusive``); integers for integer formats.
    """

    fmt: str
    minimum: float = 0.0
    exclusive: bool = False

    @property
    def max_size(self) -> int:
        return struct.calcsize("!" + self.fmt)

    def check(self, value: Any) -> None:
        integral = self.fmt not in _FLOAT_FORMATS
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                integral and not isinstance(value, int)):
            raise ValueError(f"must be {'an integer' if integral else 'a number'}, not {value!r}")
        if (isinstance(value, float) and not math.isfinite(value)) or value < self.minimum or (
                self.exclusive and value == self.minimum):
            relation = ">" if self.exclusive else ">="
            raise ValueError(f"must be a finite number {relation} {self.minimum:g}, not {value!r}")
        try:
            struct.pack("!" + self.fmt, value)
        except (struct.error, OverflowError):
            raise ValueError(f"{value!r} does not fit format {self.fmt!r}") from None

    def encode(self, value: Any) -> bytes:
        return struct.pack("!" + self.fmt, value)

    def decode(self, raw: bytes) -> Any:
        if len(raw) != self.max_size:
            raise MalformedPayload(f"{len(raw)} bytes, not {self.max_size}")
        return struct.unpack("!" + self.fmt, raw)[0]


@dataclass(frozen=True, slots=True)
class Keys:
    """Up to ``max_count`` distinct 64-bit keys, 8 bytes each, big-endian, in the
    sender's order (most important first: a report that must shrink drops the last)."""

    max_count: int

    @property
    def max_size(self) -> int:
        return 8 * self.max_count

    def check(self, value: Any) -> None:
        if not isinstance(value, tuple):
            raise ValueError(f"must be a tuple of keys, not {type(value).__name__}")
        if not 1 <= len(value) <= self.max_count:
            raise ValueError(f"must hold 1 to {self.max_count} keys, not {len(value)}")
        if not all(type(k) is int and 0 <= k < 1 << 64 for k in value):
            raise ValueError("must hold integers from 0 to 2**64 - 1")
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a key")

    def encode(self, value: Any) -> bytes:
        return struct.pack(f"!{len(value)}Q", *value)

    def decode(self, raw: bytes) -> tuple[int, ...]:
        if not raw or len(raw) % 8 or len(raw) > self.max_size:
            raise MalformedPayload(f"{len(raw)} bytes, not 8 to {self.max_size} in 8s")
        return struct.unpack(f"!{len(raw) // 8}Q", raw)


@dataclass(frozen=True, slots=True)
class Extension:
    """One known extension type: its number, the ``Report`` field it fills, its codec."""

    type: int
    name: str
    codec: Codec


# -- the table of known extension types (docs/protocol.md, "Extension types") ---------------
# Adding a report field: a type constant, one row, the keyword-only Report field below
# (default None = not sent), and the docs table. Never reuse or renumber a type.

EXT_AGENT = 1
EXT_UNHEALTHY = 2
EXT_GROUP = 3
EXT_PRIVATE_ADDRESS = 4
EXT_BANDWIDTH = 5
EXT_BANDWIDTH_LIMIT = 6
EXT_STREAMS = 7
EXT_MAX_CLIENTS = 8
EXT_DRAINING = 9
MAX_STREAMS = 64  # stream keys one report can carry (fewer when the rest of it is long)

EXTENSIONS: tuple[Extension, ...] = (
    Extension(EXT_AGENT, "agent", Utf8(max_size=64)),  # sender software, "lbmgmt/0.2.0"
    # Why the edge takes no clients though its operator did not pause it (its media server
    # does not answer): sent with state PAUSED, so a balancer that does not know this type
    # keeps clients away all the same.
    Extension(EXT_UNHEALTHY, "unhealthy", Utf8(max_size=200)),
    # The edge's group (a region, a site): balancers route clients to groups by rule.
    Extension(EXT_GROUP, "group", Utf8(max_size=64)),
    # Its address for clients inside the fleet's own networks (the redirect address is
    # the public one).
    Extension(EXT_PRIVATE_ADDRESS, "private_address", Utf8(max_size=255, address=True)),
    # Outbound bits per second now, and the most it may send: an edge at or over its
    # limit takes no new client from any redirector.
    Extension(EXT_BANDWIDTH, "bandwidth", Number("d")),
    Extension(EXT_BANDWIDTH_LIMIT, "bandwidth_limit", Number("d", minimum=1.0)),
    # The streams it carries now, as keys of their names (lbmgmt.streams.stream_key),
    # most watched first: the stream-affinity redirector sends a stream's viewers where
    # it already flows. The only extension that may not fit whole: ``fit`` drops its
    # last keys until the report fits the area and the datagram.
    Extension(EXT_STREAMS, "streams", Keys(max_count=MAX_STREAMS)),
    # The most clients it takes: at it (reported load plus clients sent since), no
    # redirector sends it another.
    Extension(EXT_MAX_CLIENTS, "max_clients", Number("I", minimum=1)),
    # It is draining to stop (``[edge] drain_on_stop``): milliseconds until it stops at
    # the latest, whatever its load. Sent with state PAUSED, so a balancer that does not
    # know this type keeps new clients away all the same.
    Extension(EXT_DRAINING, "draining", Number("I")),
)

_BY_TYPE = {ext.type: ext for ext in EXTENSIONS}


@dataclass(frozen=True, slots=True)
class Report:
    """What an edge says about itself in one datagram."""

    state: EdgeState
    address: str
    load: float
    interval_ms: int
    capacity: float | None = None
    _: KW_ONLY
    # Extension fields, one per EXTENSIONS row; None is "not sent".
    agent: str | None = None
    unhealthy: str | None = None
    group: str | None = None
    private_address: str | None = None
    bandwidth: float | None = None  # bits/s out
    bandwidth_limit: float | None = None  # bits/s
    streams: tuple[int, ...] | None = None  # stream keys, most watched first
    max_clients: int | None = None
    draining: int | None = None  # ms until it stops at the latest (with state PAUSED)

    def __post_init__(self) -> None:
        raw = self.address.encode("utf-8")
        if not 1 <= len(raw) <= MAX_ADDRESS:
            raise ValueError(f"redirect address must be 1 to {MAX_ADDRESS} bytes of UTF-8")
        if not _is_address_text(self.address):
            raise ValueError("redirect address must have no spaces or control characters")
        if not (math.isfinite(self.load) and self.load >= 0):
            raise ValueError(f"load must be a finite number >= 0, not {self.load!r}")
        if self.capacity is not None and not (math.isfinite(self.capacity) and self.capacity > 0):
            raise ValueError(f"capacity must be a finite number > 0, not {self.capacity!r}")
        if not 1 <= self.interval_ms <= 0xFFFFFFFF:
            raise ValueError("interval must be 1 ms or more")
        for ext in EXTENSIONS:
            value = getattr(self, ext.name)
            if value is not None:
                try:
                    ext.codec.check(value)
                except ValueError as exc:
                    raise ValueError(f"{ext.name} {exc}") from None


def fit(report: Report) -> Report:
    """``report``, with as many of its stream keys as fit the extension area and the
    datagram (the last ones dropped; none if none fit): every other field fits always."""
    streams = report.streams
    if not streams:
        return report
    payload = len(encode_payload(report))
    area = payload - PAYLOAD_FIXED - len(report.address.encode("utf-8"))
    over = max(area - MAX_EXTENSION_AREA, HEADER_SIZE + payload + TAG_SIZE - MAX_DATAGRAM)
    if over <= 0:
        return report
    keep = len(streams) - (over + 7) // 8
    return replace(report, streams=streams[:keep] if keep > 0 else None)


def encode_extension(ext_type: int, value: bytes) -> bytes:
    """One TLV. Public so tests and tools can build areas no ``Report`` produces."""
    if not 0 <= ext_type <= 0xFF or len(value) > 0xFFFF:
        raise ValueError("extension type must be 0-255 and its value at most 65535 bytes")
    return EXTENSION_HEADER.pack(ext_type, len(value)) + value


def encode_payload(report: Report) -> bytes:
    raw = report.address.encode("utf-8")
    flags = FLAG_CAPACITY if report.capacity is not None else 0
    parts = [PAYLOAD.pack(report.state, flags, report.interval_ms, float(report.load),
                          report.capacity or 0.0, len(raw)), raw]
    for ext in EXTENSIONS:
        value = getattr(report, ext.name)
        if value is not None:
            parts.append(encode_extension(ext.type, ext.codec.encode(value)))
    return b"".join(parts)


def decode_payload(data: bytes) -> Report:
    """The report in ``data``; MalformedPayload, and nothing else, if there is none."""
    if len(data) < PAYLOAD_FIXED:
        raise MalformedPayload("payload too short")
    state, flags, interval_ms, load, capacity, length = PAYLOAD.unpack_from(data)
    end = PAYLOAD_FIXED + length
    if len(data) < end:
        raise MalformedPayload("address length runs past the end of the payload")
    if flags & ~FLAG_CAPACITY:
        raise MalformedPayload("unknown payload flags")
    try:
        extensions = _decode_extensions(data, end) if len(data) > end else {}
        return Report(state=EdgeState(state),
                      address=data[PAYLOAD_FIXED:end].decode("utf-8"),
                      load=load, interval_ms=interval_ms,
                      capacity=capacity if flags & FLAG_CAPACITY else None,
                      **extensions)
    except ValueError as exc:  # bad enum, bad UTF-8, out-of-range number, bad extension
        raise MalformedPayload(str(exc)) from None


def _decode_extensions(data: bytes, offset: int) -> dict[str, Any]:
    """Known extensions from ``offset`` to the end, by Report field; unknown ones skipped."""
    end = len(data)
    if end - offset > MAX_EXTENSION_AREA:
        raise MalformedPayload(f"extension area over {MAX_EXTENSION_AREA} bytes")
    values: dict[str, Any] = {}
    count = 0
    while offset < end:
        count += 1
        if count > MAX_EXTENSIONS:
            raise MalformedPayload(f"more than {MAX_EXTENSIONS} extensions")
        if end - offset < EXTENSION_HEADER.size:
            raise MalformedPayload("truncated extension header")
        ext_type, size = EXTENSION_HEADER.unpack_from(data, offset)
        offset += EXTENSION_HEADER.size
        if offset + size > end:
            raise MalformedPayload(f"extension {ext_type} runs past the end of the payload")
        ext = _BY_TYPE.get(ext_type)
        if ext is not None:
            if ext.name in values:
                raise MalformedPayload(f"extension {ext.name} repeated")
            try:
                values[ext.name] = ext.codec.decode(data[offset:offset + size])
            except ValueError as exc:
                raise MalformedPayload(f"extension {ext.name}: {exc}") from None
        offset += size
    return values


def nonce_for(sequence: int) -> bytes:
    """Sequence numbers never repeat under one per-sender key, so they are the nonce."""
    return b"\x00\x00\x00\x00" + sequence.to_bytes(8, "big")
