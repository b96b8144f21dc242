"""Tunable settings, each declared once: config key, MBean attribute, bounds, meaning.

A ``Setting`` is what the config loader reads (``read``: file, line and key in
its errors), what an MBean setter checks (``check``, through
``attribute.of(setting)``), what getMBeanInfo describes (type, unit, minimum,
maximum) and what docs/management.md lists (``markdown_table``; a test keeps
the two equal). A bound changed here changes all four.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lbmgmt.configfile import Section


@dataclass(frozen=True, slots=True)
class Setting:
    """An integer setting (every tunable today is a count or a duration in ms)."""

    section: str  # the config table, "balancer"
    key: str  # the config key, "message_timeout_ms"
    attribute: str | None  # the MBean attribute that sets it live, None if config only
    default: int
    minimum: int
    maximum: int
    unit: str | None  # "ms", or None for a plain count
    doc: str  # one line: what it does

    def __post_init__(self) -> None:
        if not self.minimum <= self.default <= self.maximum:
            raise ValueError(f"{self.key}: default {self.default} outside its bounds")

    @property
    def bounds(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.minimum} to {self.maximum}{unit}"

    def read(self, section: Section) -> int:
        """The value in ``section`` (the default if absent); ConfigError naming file:line:key."""
        value: int = section.get_int(self.key, self.default, min=self.minimum, max=self.maximum)
        return value

    def check(self, value: Any) -> int:
        """``value`` if it is an integer within bounds, else ValueError saying which."""
        name = self.attribute or self.key
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, not {value!r}")
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"{name} must be {self.bounds}, not {value}")
        return value


def markdown_table(settings: Iterable[Setting]) -> str:
    """The docs' table of these settings, one row each."""
    rows = ["| config key | MBean attribute | default | bounds | what it does |",
            "|---|---|---:|---|---|"]
    for s in settings:
        attribute = f"`{s.attribute}` (writable)" if s.attribute else "config only"
        unit = f" {s.unit}" if s.unit else ""
        rows.append(f"| `[{s.section}] {s.key}` | {attribute} | {s.default}{unit} "
                    f"| {s.bounds} | {s.doc} |")
    return "\n".join(rows) + "\n"
