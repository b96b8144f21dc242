"""Prometheus exposition of every numeric MBean attribute.

The MBeans stay the one source of truth: this collector reads them at scrape
time. Names are ``<domain>_<type>_<attribute>`` in snake case (counters get
``_total``); the other key properties of the object name (``guid``) become
labels, and object-valued attributes (drops by reason) one label more.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
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


class MBeanCollector(Collector):
    def __init__(self, server: MBeanServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, bean in self.server.items():
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
        yield from families.values()


def render_metrics(server: MBeanServer) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MBeanCollector(server))
    return generate_latest(registry)
