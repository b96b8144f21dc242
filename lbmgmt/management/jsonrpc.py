"""The only module that imports jsonrpcserver (5.0.9, unmaintained: pinned).

It is kept behind this adapter because of three of its habits: uncaught
exceptions become errors carrying their text (we catch everything and send
codes only), every method must be ``async`` under async dispatch, and a batch
is schema-validated as a whole (one bad element would fail them all, which the
spec forbids), so batches are split here and dispatched element by element.

The body is parsed here, strictly (``strict_json``: RFC 8259, no NaN or
Infinity, no number that overflows, at most 32 levels of nesting; anything else
is -32700 and never a RecursionError), batches are capped at ``max_batch``
calls and answers at ``max_response_bytes``; each cap hit is counted in
``hits``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import warnings

with warnings.catch_warnings():
    # Its import calls importlib.resources.read_text, deprecated since Python 3.11;
    # harmless, and it will not be fixed upstream.
    warnings.simplefilter("ignore", DeprecationWarning)
    from jsonrpcserver import Error, Success
    from jsonrpcserver.async_main import dispatch_to_serializable
    from jsonrpcserver.sentinels import NODATA

from lbmgmt.management.errors import (INTERNAL, INVALID_REQUEST, PARSE_ERROR,
                                     RESPONSE_TOO_LARGE, ManagementError)
from lbmgmt.management.strict_json import NotJson, parse

log = logging.getLogger("lbmgmt.management")

Method = Callable[..., Awaitable[Any]]
def error_answer(code: int, message: str, id_: Any = None, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": id_}


def _wrap(name: str, func: Method) -> Method:
    @functools.wraps(func)
    async def method(*args: Any, **kwargs: Any) -> Any:
        try:
            return Success(await func(*args, **kwargs))
        except ManagementError as exc:
            return Error(exc.code, exc.message, exc.data or NODATA)
        except Exception:
            log.exception("management method failed", extra={"fields": {"method": name}})
            return Error(INTERNAL, "Internal error")

    method.__signature__ = inspect.signature(func)  # type: ignore[attr-defined]
    return method


def _identity(obj: Any) -> Any:
    return obj


class JsonRpcDispatcher:
    def __init__(self, methods: dict[str, Method], *, max_batch: int = 100,
                 max_response_bytes: int = 16 << 20) -> None:
        for name, func in methods.items():
            if not inspect.iscoroutinefunction(func):
                raise TypeError(f"JSON-RPC method {name} must be async")
        self._methods = {name: _wrap(name, func) for name, func in methods.items()}
        self.max_batch = max_batch
        self.max_response_bytes = max_response_bytes
        self.hits: Counter[str] = Counter({"bad_json": 0, "batch": 0, "response_bytes": 0})

    async def dispatch(self, body: bytes | str, context: Any) -> Any:
        """A response object, a list of them, or None (notifications only)."""
        try:
            parsed = parse(body)
        except NotJson:
            self.hits["bad_json"] += 1
            return error_answer(PARSE_ERROR, "Parse error")
        if isinstance(parsed, list) and parsed:
            if len(parsed) > self.max_batch:
                self.hits["batch"] += 1
                return error_answer(INVALID_REQUEST, f"Invalid Request: a batch of "
                                    f"{len(parsed)} calls; at most {self.max_batch}",
                                    data={"maxBatch": self.max_batch})
            answers = await asyncio.gather(*(self._one(item, context) for item in parsed))
            return [a for a in answers if a is not None] or None
        return await self._one(parsed, context)

    async def answer(self, body: bytes | str, context: Any) -> bytes | None:
        """``dispatch``'s answer as JSON bytes, within ``max_response_bytes``.

        Each answer of a batch is encoded on its own; those that would take the
        whole past the cap are replaced by a Response too large error (same id).
        """
        answer = await self.dispatch(body, context)
        if answer is None:
            return None
        if isinstance(answer, dict):
            return self._encode([answer])[1:-1]
        return self._encode(answer)

    def _encode(self, answers: list[dict[str, Any]]) -> bytes:
        parts: list[bytes] = []
        size = 2  # [ and ]
        for answer in answers:
            part = json.dumps(answer, default=str).encode()
            if size + len(part) + 1 > self.max_response_bytes:
                self.hits["response_bytes"] += 1
                part = json.dumps(error_answer(
                    RESPONSE_TOO_LARGE, "Response too large", answer.get("id"),
                    {"maxResponseBytes": self.max_response_bytes})).encode()
            size += len(part) + 1
            parts.append(part)
        return b"[" + b",".join(parts) + b"]"

    async def _one(self, request: Any, context: Any) -> Any:
        return await dispatch_to_serializable(request, self._methods, context=context,
                                              deserializer=_identity)
