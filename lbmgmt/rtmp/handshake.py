"""The simple RTMP handshake (C0/C1/C2, S0/S1/S2), as ffmpeg, librtmp and GStreamer accept it.

S1's version bytes are zero, which tells clients that try the digest
("complex") handshake to fall back to the simple one, and S2 echoes C1.
"""

from __future__ import annotations

import struct

VERSION = 3
ENCRYPTED_VERSIONS = (6, 8, 9)  # RTMPE and friends: not supported
PACKET = 1536
_TIME = struct.Struct("!I")


def packet(time_ms: int, random: bytes, version: bytes = b"\0\0\0\0") -> bytes:
    """C1/S1: 4 bytes time, 4 bytes version (zero), 1528 random bytes."""
    if len(random) != PACKET - 8:
        raise ValueError("handshake random must be 1528 bytes")
    return _TIME.pack(time_ms & 0xFFFFFFFF) + version + random


def server_reply(c1: bytes, *, time_ms: int, random: bytes) -> bytes:
    """S0 + S1 + S2 for a client's C1."""
    return bytes((VERSION,)) + packet(time_ms, random) + c1
