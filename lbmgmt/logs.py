"""Structured logging: one event per line, logfmt or JSON, quiet by default.

Fields travel in ``extra={"fields": {...}}`` so they stay machine-readable;
nothing here ever formats a shared key, because keys are wrapped in
``SharedKey`` whose repr is redacted.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO


def fields(**kw: Any) -> dict[str, Any]:
    """``log.info("msg", extra=fields(guid=...))`` reads better than nested dicts."""
    return {"fields": kw}


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="\\\n'):
        return json.dumps(text)
    return text


class StructuredFormatter(logging.Formatter):
    def __init__(self, style: str = "logfmt") -> None:
        super().__init__()
        self.json = style == "json"

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        event.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        if self.json:
            return json.dumps(event, default=str)
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in event.items())


def setup_logging(verbosity: int = 0, style: str = "logfmt",
                  stream: TextIO | None = None) -> None:
    """0 = warnings only, 1 = info, 2+ = debug."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(StructuredFormatter(style))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log would be one line per request: never at our INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
