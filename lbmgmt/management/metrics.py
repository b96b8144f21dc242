"""Prometheus exposition of every numeric MBean attribute.

The MBeans stay the one source of truth: this collector reads them at scrape
time. Names are ``<domain>_<type>_<attribute>`` in snake case (counters get
``_total``); the other key properties of the object name (``guid``) become
labels, and object-valued attributes (drops by reason) one label more.

The text is Prometheus' exposition format 0.0.4, written here line by line
(values formatted by ``prometheus_client``'s own ``floatToGoString``): its
object model (a sample object and a label dict per value) made a 10 000-edge
balancer's scrape allocate hundreds of thousands of objects that lived across
the slices below, and each such wave brought full garbage collections of 100 ms
and more (bench/stall.py). Lines are strings, which the collector never walks.

With thousands of MBeans (a balancer with 10 000 edges has 10 000 Server
MBeans) a scrape is too long to hold the loop that serves clients: ``Metrics``
reads the MBeans ``PER_SLICE`` at a time, letting the loop run between slices,
and serves the text for ``max_age`` seconds. Up to ``PER_SLICE`` MBeans it
renders afresh, at once.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any

from prometheus_client.utils import floatToGoString

from lbmgmt.management.server import MBeanServer
from lbmgmt.steps import finish, finish_between_turns

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


@functools.lru_cache(maxsize=4096)  # the same few names, for every MBean at every scrape
def snake(text: str) -> str:
    return _INVALID.sub("_", _CAMEL.sub("_", text)).lower()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{_INVALID.sub("_", k)}="{_label_value(v)}"'
                          for k, v in sorted(labels.items())) + "}"


class _Family:
    """One metric's header and sample lines (strings only: see the module docstring)."""

    __slots__ = ("name", "lines")

    def __init__(self, name: str, kind: str, description: str) -> None:
        self.name = name
        help_text = description.replace("\\", "\\\\").replace("\n", "\\n")
        self.lines = [f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"]


Families = dict[str, _Family]
PER_SLICE = 25  # MBeans read per loop turn (a Server MBean has 7 metrics: ~1-2 ms)
LINES_PER_STEP = 2000  # lines joined per loop turn at the end


def collect_into(families: Families, beans: Iterable[tuple[Any, Any]]) -> None:
    """Add the numeric attributes of ``beans`` (name, MBean pairs) to ``families``."""
    for name, bean in beans:
        base_labels = {k: v for k, v in name.properties if k != "type"}
        prefix = f"{snake(name.domain)}_{snake(name.get('type') or 'mbean')}"
        base = _labels(base_labels)
        for attr in bean.mbean_info().attributes.values():
            if attr.metric is None:
                continue
            try:
                value = bean.read(attr.name)
            except Exception:  # an attribute that cannot be read now is left out
                continue
            samples: list[str] = []
            levels: list[str] = []  # a counter object's gauge keys ("active")
            if isinstance(value, dict):
                key = attr.metric_label or "key"
                for k, v in value.items():
                    number = _number(v)
                    if number is None:
                        continue
                    if k in attr.gauges:
                        levels.append(f"{_labels({**base_labels, 'state': str(k)})} "
                                      f"{floatToGoString(number)}\n")
                    else:
                        samples.append(f"{_labels({**base_labels, key: str(k)})} "
                                       f"{floatToGoString(number)}\n")
            else:
                number = _number(value)
                if number is not None:
                    samples.append(f"{base} {floatToGoString(number)}\n")
            metric_name = f"{prefix}_{snake(attr.name)}"
            if levels:
                _add(families, metric_name, "gauge", f"{attr.description} (now)", levels)
            if samples:
                counter = attr.metric == "counter"
                _add(families, metric_name + "_total" if counter else metric_name,
                     "counter" if counter else "gauge", attr.description, samples)


def _add(families: Families, name: str, kind: str, description: str,
         samples: list[str]) -> None:
    family = families.get(name)
    if family is None:
        family = families[name] = _Family(name, kind, description)
    family.lines += [family.name + sample for sample in samples]


def metrics_steps(server: MBeanServer, names: list[Any] | None = None, *,
                  per_slice: int = PER_SLICE) -> Generator[None, None, bytes]:
    """The text, read ``per_slice`` MBeans a step: ``next()`` until StopIteration, whose
    value it is. The caller may let its loop run between any two steps.

    ``names`` (default: every MBean, in registration order) is taken as it is at the
    start; an MBean unregistered since is left out. What lives across steps is that list and the
    lines made so far (strings): a full garbage collection finds next to nothing new.
    """
    if names is None:
        names = server.names()
    families: Families = {}
    for start in range(0, len(names), per_slice):
        collect_into(families, ((name, bean) for name in names[start:start + per_slice]
                                if (bean := server.get(name)) is not None))
        yield
    parts: list[bytes] = []
    for family in families.values():
        lines, family.lines = family.lines, []  # (let go as it goes)
        for start in range(0, len(lines), LINES_PER_STEP):
            parts.append("".join(lines[start:start + LINES_PER_STEP]).encode("utf-8"))
            yield
    return b"".join(parts)


def render_metrics(server: MBeanServer) -> bytes:
    """Every MBean at once (a small server, tests)."""
    return finish(metrics_steps(server))


class Metrics:
    """/metrics without holding the loop: see the module docstring."""

    def __init__(self, server: MBeanServer, *, max_age: float = 1.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.max_age = max_age
        self.monotonic = monotonic
        self._text: bytes | None = None
        self._made_at = 0.0
        self._making: asyncio.Task[bytes] | None = None

    async def text(self) -> bytes:
        if len(self.server) <= PER_SLICE:
            return render_metrics(self.server)
        now = self.monotonic()
        if self._text is not None and now - self._made_at < self.max_age:
            return self._text
        if self._making is None:
            self._making = asyncio.get_running_loop().create_task(self._make(now))
        return await asyncio.shield(self._making)

    async def _make(self, now: float) -> bytes:
        try:
            text = await finish_between_turns(metrics_steps(self.server, self.server.names()))
            self._text, self._made_at = text, now
            return text
        finally:
            self._making = None
