"""Text typed in a form → a value of an MBean attribute's or parameter's open type.

The console checks types before sending, so a typo is an inline message, not a
round trip; the daemon checks again (ranges, meaning) and its error is shown too.
"""

from __future__ import annotations

import json
import math
from typing import Any

TRUE = {"true", "yes", "on", "1"}
FALSE = {"false", "no", "off", "0"}


class TypedInputError(ValueError):
    pass


def parse_value(text: str, type_: str) -> Any:
    text = text.strip()
    if type_ == "integer":
        try:
            return int(text)
        except ValueError:
            raise TypedInputError(f"{text!r} is not an integer") from None
    if type_ == "number":
        try:
            value = float(text)
        except ValueError:
            raise TypedInputError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise TypedInputError("must be a finite number")
        return value
    if type_ == "boolean":
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise TypedInputError(f"{text!r} is not true or false")
    if type_ in ("object", "array"):
        try:
            value = json.loads(text)
        except ValueError:
            raise TypedInputError(f"not valid JSON for an {type_}") from None
        if not isinstance(value, dict if type_ == "object" else list):
            raise TypedInputError(f"JSON {type_} expected")
        return value
    return text  # string (and anything unknown: the daemon decides)


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "))
    if value is None:
        return "—"
    return str(value)
