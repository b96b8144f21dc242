"""AMF0 (Action Message Format 0), the encoding of RTMP command messages.

Written here because no maintained Python package does it. Covers what RTMP
commands use: number, boolean, string, long string, object, null, undefined,
ECMA array, strict array, date and object end. Decoding is defensive: every
length is checked against the bytes there are, nesting is bounded, and any
problem is one ``AMF0Error``, never an IndexError or a recursion crash.
"""

from __future__ import annotations

import datetime
import math
import struct
from dataclasses import dataclass
from typing import Any

NUMBER, BOOLEAN, STRING, OBJECT = 0x00, 0x01, 0x02, 0x03
NULL, UNDEFINED, ECMA_ARRAY, OBJECT_END = 0x05, 0x06, 0x08, 0x09
STRICT_ARRAY, DATE, LONG_STRING = 0x0A, 0x0B, 0x0C
MAX_DEPTH = 32

_DOUBLE = struct.Struct("!d")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_DATE_TZ = struct.Struct("!h")


class AMF0Error(ValueError):
    pass


class _Undefined:
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Undefined"


UNDEFINED_VALUE = _Undefined()


class ECMAArray(dict[str, Any]):
    """An associative array: a dict that encodes as ECMA array, not object."""


@dataclass(frozen=True, slots=True)
class AMFDate:
    milliseconds: float  # since the Unix epoch, UTC
    timezone: int = 0  # minutes; reserved, senders write 0

    def to_datetime(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.milliseconds / 1000, datetime.UTC)


# -- encoding -------------------------------------------------------------------
def _utf8(text: str, long: bool = False) -> bytes:
    raw = text.encode("utf-8")
    if long:
        return _U32.pack(len(raw)) + raw
    if len(raw) > 0xFFFF:
        raise AMF0Error("string too long for a short AMF0 string")
    return _U16.pack(len(raw)) + raw


def _encode_into(out: bytearray, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise AMF0Error("value nested too deeply")
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED_VALUE:
        out.append(UNDEFINED)
    elif isinstance(value, bool):
        out += bytes((BOOLEAN, 1 if value else 0))
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw)) + raw
        else:
            out.append(STRING)
            out += _U16.pack(len(raw)) + raw
    elif isinstance(value, AMFDate):
        out.append(DATE)
        out += _DOUBLE.pack(value.milliseconds) + _DATE_TZ.pack(value.timezone)
    elif isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise AMF0Error("naive datetime: give it a timezone")
        _encode_into(out, AMFDate(value.timestamp() * 1000), depth)
    elif isinstance(value, ECMAArray):
        out.append(ECMA_ARRAY)
        out += _U32.pack(len(value))
        _encode_properties(out, value, depth)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _encode_properties(out, value, depth)
    elif isinstance(value, list | tuple):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_into(out, item, depth + 1)
    else:
        raise AMF0Error(f"cannot encode {type(value).__name__} as AMF0")


def _encode_properties(out: bytearray, value: dict[str, Any], depth: int) -> None:
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise AMF0Error(f"property names must be non-empty strings, not {key!r}")
        out += _utf8(key)
        _encode_into(out, item, depth + 1)
    out += b"\x00\x00" + bytes((OBJECT_END,))


def encode(*values: Any) -> bytes:
    """The AMF0 encoding of ``values``, one after another (as a command's arguments)."""
    out = bytearray()
    for value in values:
        _encode_into(out, value, 0)
    return bytes(out)


# -- decoding -------------------------------------------------------------------
class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise AMF0Error(f"truncated: needed {n} bytes at offset {self.pos}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def text(self, length: int) -> str:
        try:
            return bytes(self.take(length)).decode("utf-8")
        except UnicodeDecodeError:
            raise AMF0Error(f"invalid UTF-8 in string at offset {self.pos - length}") from None


def _decode(r: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise AMF0Error("value nested too deeply")
    marker = r.byte()
    if marker == NUMBER:
        return _DOUBLE.unpack(r.take(8))[0]
    if marker == BOOLEAN:
        return r.byte() != 0
    if marker == STRING:
        return r.text(_U16.unpack(r.take(2))[0])
    if marker == LONG_STRING:
        return r.text(_U32.unpack(r.take(4))[0])
    if marker == NULL:
        return None
    if marker == UNDEFINED:
        return UNDEFINED_VALUE
    if marker == OBJECT:
        return _decode_properties(r, {}, depth)
    if marker == ECMA_ARRAY:
        r.take(4)  # the count is a hint; the object-end marker is what ends it
        return _decode_properties(r, ECMAArray(), depth)
    if marker == STRICT_ARRAY:
        count = _U32.unpack(r.take(4))[0]
        if count > len(r.data) - r.pos:  # every item takes at least one byte
            raise AMF0Error(f"strict array claims {count} items in fewer bytes")
        return [_decode(r, depth + 1) for _ in range(count)]
    if marker == DATE:
        millis = _DOUBLE.unpack(r.take(8))[0]
        tz = _DATE_TZ.unpack(r.take(2))[0]
        if not math.isfinite(millis):
            raise AMF0Error("date is not a finite number")
        return AMFDate(millis, tz)
    if marker == OBJECT_END:
        raise AMF0Error(f"object end where a value was expected at offset {r.pos - 1}")
    raise AMF0Error(f"unsupported AMF0 type {marker:#04x} at offset {r.pos - 1}")


def _decode_properties(r: _Reader, into: dict[str, Any], depth: int) -> dict[str, Any]:
    while True:
        key = r.text(_U16.unpack(r.take(2))[0])
        if not key:
            if r.byte() != OBJECT_END:
                raise AMF0Error(f"empty property name without object end at offset {r.pos}")
            return into
        into[key] = _decode(r, depth + 1)


def decode_all(data: bytes | memoryview) -> list[Any]:
    """Every value in ``data``; raises AMF0Error unless it is all well-formed AMF0."""
    r = _Reader(data)
    values = []
    while r.pos < len(r.data):
        values.append(_decode(r, 0))
    return values


def decode(data: bytes | memoryview) -> Any:
    """Exactly one value."""
    r = _Reader(data)
    value = _decode(r, 0)
    if r.pos != len(r.data):
        raise AMF0Error(f"{len(r.data) - r.pos} bytes after the value")
    return value
