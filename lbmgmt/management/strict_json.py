"""JSON as RFC 8259 has it, and as the management port takes it.

Python's json module takes NaN, Infinity and numbers that overflow to inf, and
recurses as deep as the text nests. ``parse`` refuses all of those with
``NotJson`` (a ValueError): no NaN or Infinity, no overflow, at most
``MAX_DEPTH`` levels, never a RecursionError. The port parses requests with it,
and ``lbmgmt call/set/invoke`` their arguments, so both agree on what is JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # levels of arrays and objects in a request; a real call needs 4


class NotJson(ValueError):
    """What RFC 8259 JSON cannot hold: NaN, Infinity, a number that overflows."""


def _no_constant(name: str) -> Any:
    raise NotJson(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotJson(f"{text[:40]} overflows")
    return value


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = (item.values() if isinstance(item, dict)
                    else item if isinstance(item, list) else ())
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def parse(body: bytes | str) -> Any:
    """The value, or NotJson (a ValueError) for anything RFC 8259 would not take."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 and int overflow are ValueErrors
        raise NotJson(str(exc)[:100]) from None
    if isinstance(value, dict | list) and _too_deep(value):
        raise NotJson(f"nested deeper than {MAX_DEPTH}")
    return value
