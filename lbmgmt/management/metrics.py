"""Prometheus exposition of every numeric MBean attribute.

The MBeans stay the one source of truth: this collector reads them at scrape
time. Names are ``<domain>_<type>_<attribute>`` in snake case (counters get
``_total``); the other key properties of the object name (``guid``) become
labels, and object-valued attributes (drops by reason) one label more.

With thousands of MBeans (a balancer with 10 000 edges has 10 000 Server
MBeans) a scrape is too long to hold the loop that serves clients: ``Metrics``
reads the MBeans ``PER_SLICE`` at a time, letting the loop run between slices,
formats the snapshot in a thread, and serves it for ``max_age`` seconds. Up to
``PER_SLICE`` MBeans it renders afresh, at once.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lbmgmt.management.server import MBeanServer

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def snake(text: str) -> str:
    return _INVALID.sub("_", _CAMEL.sub("_", text)).lower()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


Families = dict[str, GaugeMetricFamily | CounterMetricFamily]
PER_SLICE = 200  # MBeans read per loop turn


def collect_into(families: Families, beans: Iterable[tuple[Any, Any]]) -> None:
    """Add the numeric attributes of ``beans`` (name, MBean pairs) to ``families``."""
    for name, bean in beans:
        base_labels = {k: v for k, v in name.properties if k != "type"}
        prefix = f"{snake(name.domain)}_{snake(name.get('type') or 'mbean')}"
        for attr in bean.mbean_info().attributes.values():
            if attr.metric is None:
                continue
            try:
                value = bean.read(attr.name)
            except Exception:  # an attribute that cannot be read now is left out
                continue
            metric_name = f"{prefix}_{snake(attr.name)}"
            samples: list[tuple[dict[str, str], float]] = []
            if isinstance(value, dict):
                key = attr.metric_label or "key"
                for k, v in value.items():
                    number = _number(v)
                    if number is not None:
                        samples.append(({**base_labels, key: str(k)}, number))
            else:
                number = _number(value)
                if number is not None:
                    samples.append((base_labels, number))
            if not samples:
                continue
            family = families.get(metric_name)
            if family is None:
                cls = CounterMetricFamily if attr.metric == "counter" else GaugeMetricFamily
                family = families[metric_name] = cls(metric_name, attr.description,
                                                     labels=sorted(samples[0][0]))
            for sample_labels, number in samples:
                family.add_metric([sample_labels[k] for k in sorted(sample_labels)], number)


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _generate(families: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)


def render_metrics(server: MBeanServer) -> bytes:
    """Every MBean at once (a small server, tests)."""
    families: Families = {}
    collect_into(families, server.items())
    return _generate(list(families.values()))


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
        beans = list(self.server.items())
        if len(beans) <= PER_SLICE:
            return render_metrics(self.server)
        now = self.monotonic()
        if self._text is not None and now - self._made_at < self.max_age:
            return self._text
        if self._making is None:
            self._making = asyncio.get_running_loop().create_task(self._make(beans, now))
        return await asyncio.shield(self._making)

    async def _make(self, beans: list[tuple[Any, Any]], now: float) -> bytes:
        try:
            families: Families = {}
            for start in range(0, len(beans), PER_SLICE):
                collect_into(families, beans[start:start + PER_SLICE])
                await asyncio.sleep(0)  # everything else that is ready runs in between
            text = await asyncio.to_thread(_generate, list(families.values()))
            self._text, self._made_at = text, now
            return text
        finally:
            self._making = None
