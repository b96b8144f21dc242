"""Stream names and keys: one name for one stream, whichever way a client says it."""

from __future__ import annotations

import pytest

from lbmgmt.streams import MAX_NAME_BYTES, from_media_path, named, stream_key


def test_a_key_is_64_bits_and_the_same_in_every_process():
    # a recorded value: edges and balancers of any release must agree on it
    assert stream_key("live/s") == 0xEE924836EC626880  # BLAKE2b-64, big-endian
    assert stream_key("live/s") != stream_key("live/S")  # case-sensitive, as servers are


@pytest.mark.parametrize("given,name", [
    ("live/s", "live/s"), ("/live/s/", "live/s"), ("live/s?token=1", "live/s"),
    ("cam1", "cam1"), ("a/b/c", "a/b/c"), ("", None), ("/", None), ("?x=1", None),
    ("x" * (MAX_NAME_BYTES + 1), None),
])
def test_named_drops_the_query_and_the_slashes_around(given, name):
    assert named(given) == name


@pytest.mark.parametrize("path,name", [
    ("hls/s.m3u8", "hls/s"), ("hls/s/index.m3u8", "hls/s"), ("dash/s.mpd", "dash/s"),
    ("live/s.flv", "live/s"), ("hls/s-1.ts", "hls/s-1"), ("live/cam.1/index.m3u8", "live/cam.1"),
    ("hls/s.m3u8?token=1", "hls/s"), ("hls", None), ("hls/", None), ("hls/.m3u8", "hls/.m3u8"),
])
def test_a_media_path_names_its_app_and_stream(path, name):
    assert from_media_path(path) == name
