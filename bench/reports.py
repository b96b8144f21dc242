"""Made-up edges' reports for the benchmarks, sealed ahead and sent over loopback."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid

from lbmgmt.fleet.ports import HOST
from lbmgmt.fleet.processes import ProcessFleet
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey

KEY = ProcessFleet.key  # the key a ProcessFleet's balancers are started with


def fake_reports(count: int, *, interval_ms: int = 600_000, load: float = 0.0,
                 key: str = KEY) -> list[bytes]:
    """One sealed RUNNING report from each of ``count`` made-up edges."""
    shared = SharedKey(key)
    now = time.time()
    out = []
    for i in range(count):
        sealer = ReportSealer(uuid.uuid4())
        out.append(sealer.seal(Report(EdgeState.RUNNING, f"10.{i >> 16 & 255}."
                                      f"{i >> 8 & 255}.{i & 255}:1935", load, interval_ms),
                               shared, now=now))
    return out


class FakeEdges:
    """Made-up edges that keep their identity: ``reports()`` is their next round."""

    def __init__(self, count: int, *, interval_ms: int, key: str = KEY) -> None:
        self.key = SharedKey(key)
        self.interval_ms = interval_ms
        self.sealers = [ReportSealer(uuid.uuid4()) for _ in range(count)]

    def reports(self) -> list[bytes]:
        now = time.time()
        return [sealer.seal(Report(EdgeState.RUNNING, f"10.9.{i >> 8 & 255}.{i & 255}:1935",
                                   0.0, self.interval_ms), self.key, now=now)
                for i, sealer in enumerate(self.sealers)]


def send_all(port: int, datagrams: list[bytes], *, pace: float | None = None) -> None:
    """Send datagrams to a balancer, as fast as possible or at ``pace`` per second."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        start = time.perf_counter()
        for i, data in enumerate(datagrams):
            if pace:
                delay = start + i / pace - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            with contextlib.suppress(BlockingIOError):
                s.sendto(data, (HOST, port))
