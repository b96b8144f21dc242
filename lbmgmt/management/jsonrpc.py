"""The only module that imports jsonrpcserver (5.0.9, unmaintained: pinned).

It is kept behind this adapter because of three of its habits: uncaught
exceptions become errors carrying their text (we catch everything and send
codes only), every method must be ``async`` under async dispatch, and a batch
is schema-validated as a whole (one bad element would fail them all, which the
spec forbids), so batches are split here and dispatched element by element.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
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

from lbmgmt.management.errors import INTERNAL, ManagementError

log = logging.getLogger("lbmgmt.management")

Method = Callable[..., Awaitable[Any]]


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
    def __init__(self, methods: dict[str, Method]) -> None:
        for name, func in methods.items():
            if not inspect.iscoroutinefunction(func):
                raise TypeError(f"JSON-RPC method {name} must be async")
        self._methods = {name: _wrap(name, func) for name, func in methods.items()}

    async def dispatch(self, body: str, context: Any) -> Any:
        """A response object, a list of them, or None (notifications only)."""
        try:
            parsed = json.loads(body)
        except ValueError:
            return await dispatch_to_serializable(body, self._methods, context=context)
        if isinstance(parsed, list) and parsed:
            answers = await asyncio.gather(*(self._one(item, context) for item in parsed))
            return [a for a in answers if a is not None] or None
        return await self._one(parsed, context)

    async def _one(self, request: Any, context: Any) -> Any:
        return await dispatch_to_serializable(request, self._methods, context=context,
                                              deserializer=_identity)
