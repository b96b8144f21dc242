"""Stream names and their keys: how an edge and a balancer agree on "the same stream".

A stream's name is its path on the media server without the scheme, host,
leading or trailing slashes, or query: ``app/stream`` for the RTMP servers
(nginx-rtmp's application and stream, SRS's app and stream), the path name for
MediaMTX (``live/s``, ``cam1``). Edges report the streams they carry as 8-byte
keys of those names (``stream_key``), so the report stays small and a name's
length costs nothing on the wire; a balancer keys what a client asks for the
same way and compares numbers. Names are case-sensitive, as the servers' are.

Clients name streams in their own ways; the functions below turn each into a name:
``named`` (``?stream=``, RTSP and WHEP paths: the path as it is), ``from_media_path``
(an HLS/DASH/HTTP-FLV path: ``hls/s.m3u8`` and ``hls/s/index.m3u8`` are ``hls/s``).
"""

from __future__ import annotations

import hashlib

MAX_NAME_BYTES = 1024  # a longer name is not a stream anyone reports: not looked up
# What follows a stream's name in an HTTP delivery path (nginx-rtmp's hls, dash;
# HTTP-FLV; a nested playlist's segments): stripped to find the name.
MEDIA_SUFFIXES = (".m3u8", ".mpd", ".flv", ".ts", ".m4s", ".mp4")


def stream_key(name: str) -> int:
    """The 64-bit key of a stream name (BLAKE2b, 8 bytes, big-endian): the same on every
    edge and balancer, whatever the Python process (``hash()`` is salted per process)."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def named(path: str) -> str | None:
    """A name as a client gives it (``?stream=live/s``, an RTSP or WHEP path): the query
    and surrounding slashes dropped; None if nothing is left or it is too long."""
    name = path.partition("?")[0].strip("/")
    if not name or len(name) > MAX_NAME_BYTES or (
            len(name) * 4 > MAX_NAME_BYTES
            and len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES):
        return None
    return name


def from_media_path(path: str) -> str | None:
    """The stream of an HTTP delivery path ``<app>/<stream>[/…]``: its first two
    segments, the second without a media suffix (``hls/s.m3u8``, ``hls/s/index.m3u8``
    and ``hls/s-1.ts`` are not alike: the last is ``hls/s-1``, as nginx-rtmp names
    fragments; a player asks for the playlist first, and only that is redirected)."""
    name = named(path)
    if name is None:
        return None
    app, slash, rest = name.partition("/")
    if not slash or not rest:
        return None
    stream = rest.partition("/")[0]
    for suffix in MEDIA_SUFFIXES:
        if stream.endswith(suffix) and len(stream) > len(suffix):
            stream = stream[:-len(suffix)]
            break
    return f"{app}/{stream}" if stream else None
