"""Reading a media server's HTTP API within budgets, and checking what it answered.

Whatever a monitor reads from the network is bounded: an answer is read in chunks
and given up past ``max_bytes`` (announced or not, compressed or not), a read past
``timeout`` seconds fails (every page of a paginated answer together: ``deadline``),
and a list runs to ``MAX_PAGES`` pages at most. An answer that is not what was
expected (not JSON, a field missing or of another type) is a ``MonitorError``
naming the field, never a traceback, and never a load made up from what was there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from lbmgmt.configfile import Section
from lbmgmt.edge.monitors.base import MonitorError

MAX_ANSWER_BYTES = 4 * 1024 * 1024  # one JSON answer (a page)
MAX_PAGES = 100  # pages of a list read per measure (100 items a page: 10 000 items)
CHUNK = 64 * 1024


def shown_url(url: str) -> str:
    """``url`` as logs and the Monitor attribute may show it: a password in it hidden."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def checked_url(url: str, what: str = "URL") -> str:
    """An http(s) URL with a host, or ValueError (the config names the key)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError as exc:
        raise ValueError(f"{what} {shown_url(url)!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be http(s)://host..., not {shown_url(url)!r}")
    return url


def read_timeout(section: Section) -> float:
    """The ``[monitor] timeout_ms`` of an HTTP monitor (2000, 10 to 60 000), in seconds:
    its whole read's budget, every page together."""
    ms: int = section.get_int("timeout_ms", 2000, min=10, max=60_000)
    return ms / 1000


def read_filter(section: Section, key: str, noun: str) -> list[str] | None:
    """An optional list of names to count (``paths``, ``applications``); None: all. An
    empty list is an error: it would count nothing, a load of 0 for ever."""
    names: list[str] | None = section.get_str_list(key, None)
    if names == []:
        section.fail(key, f"name at least one {noun}, or leave it out to count all")
    return names


class HttpSource:
    """GETs to one media server, each read within ``max_bytes`` and ``timeout``."""

    def __init__(self, *, timeout: float, max_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        # an aiohttp.ClientSession, made at the first get(): aiohttp is imported there
        # (a quarter of a second: an edge with another monitor never needs it)
        self._session: Any = None

    async def get(self, url: str) -> bytes:
        """The body of a 200 answer to ``url``; MonitorError for anything else."""
        import aiohttp  # (a quarter of a second to import: only HTTP monitors need it)

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        shown = shown_url(url)
        try:
            # (a redirect is an answer, not followed: the server beside the edge is the
            # one measured, never another host it points to)
            async with self._session.get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise MonitorError(f"{shown} answered HTTP {resp.status}")
                size = resp.content_length
                if size is not None and size > self.max_bytes:
                    self._too_big(shown)
                body = bytearray()
                async for chunk in resp.content.iter_chunked(CHUNK):
                    body += chunk
                    if len(body) > self.max_bytes:
                        self._too_big(shown)
                return bytes(body)
        except TimeoutError:  # (aiohttp's own timeouts are TimeoutErrors too)
            raise MonitorError(f"cannot read {shown}: no answer within "
                               f"{self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise MonitorError(f"cannot read {shown}: {exc or type(exc).__name__}") from None

    def _too_big(self, shown: str) -> NoReturn:
        raise MonitorError(f"{shown} answered more than {self.max_bytes} bytes "
                           "(not a media server's API?)")

    @contextlib.asynccontextmanager
    async def deadline(self, shown: str) -> AsyncIterator[None]:
        """Every request inside together within ``timeout`` (the pages of one list)."""
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except TimeoutError:
            raise MonitorError(f"cannot read {shown}: no whole answer within "
                               f"{self.timeout:g} s") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# -- JSON, checked --------------------------------------------------------------------------

def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes, where: str) -> Any:
    """The JSON document in ``body`` (NaN and Infinity refused); MonitorError if none."""
    try:
        return json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise MonitorError(f"{where}: JSON nested too deep") from None
    except ValueError as exc:  # (UnicodeDecodeError too)
        raise MonitorError(f"{where} is not JSON: {exc}") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _wrong(where: str, expected: str, value: Any) -> NoReturn:
    if value is _MISSING:
        shown = "missing"
    elif isinstance(value, bool | int | float | str):
        shown = f"{_kind(value)} {_clip(repr(value))}"
    else:
        shown = _kind(value)
    raise MonitorError(f"unexpected answer: {where} is {shown}, not {expected}")


_MISSING: Any = object()


def _clip(text: str, size: int = 40) -> str:
    return text if len(text) <= size else text[:size] + "…"


def member(obj: dict[str, Any], key: str) -> Any:
    """``obj[key]``, or a marker the checks below call missing."""
    return obj.get(key, _MISSING)


def json_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _wrong(where, "an object", value)
    return value


def json_array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        _wrong(where, "an array", value)
    return value


def json_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        _wrong(where, "a string", value)
    return value


def json_flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        _wrong(where, "true or false", value)
    return value


def json_count(value: Any, where: str) -> int:
    """A whole number >= 0 (a count, a byte counter)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        _wrong(where, "a whole number >= 0", value)
    return value


def json_rate(value: Any, where: str) -> float:
    """A finite number >= 0 (a rate)."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value < 0):
        _wrong(where, "a number >= 0", value)
    return float(value)


def most_watched(counts: dict[str, int]) -> list[str]:
    """Names by their count, most first (ties by name, so the order is stable)."""
    return sorted(counts, key=lambda name: (-counts[name], name))
