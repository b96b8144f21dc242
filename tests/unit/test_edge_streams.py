"""An edge reports the streams its monitor names, as keys, within max_streams and the datagram.

The reports are read as a balancer reads them: a UDP socket on 127.0.0.1 and
ReportReceiver (``Balancer`` below, used by test_edge_drain.py too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lbmgmt.edge.config import EdgeConfig, load_edge_config
from lbmgmt.edge.daemon import EdgeDaemon
from lbmgmt.edge.mbeans import SENDER_NAME
from lbmgmt.edge.monitors import ManualMonitor
from lbmgmt.edge.targets import ReportTarget
from lbmgmt.management.metrics import render_metrics
from lbmgmt.status import DatagramDropped, ReportAccepted, ReportReceiver, SharedKey
from lbmgmt.status.wire import MAX_DATAGRAM, MAX_STREAMS, Report
from lbmgmt.streams import MAX_NAME_BYTES, stream_key

KEY = "edge-streams-test-key-0123"
HANG = 30.0  # a hang guard, never a performance bound


class Balancer(asyncio.DatagramProtocol):
    """A UDP socket on loopback that opens an edge's reports, as a balancer would."""

    def __init__(self) -> None:
        self.receiver = ReportReceiver(SharedKey(KEY))
        self.reports: asyncio.Queue[Report | None] = asyncio.Queue()  # None: a drop
        self.dropped: list[DatagramDropped] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def start(self, port: int = 0) -> Balancer:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", port))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def datagram_received(self, data: bytes, addr: Any) -> None:
        event = self.receiver.receive(data, time.time())
        if isinstance(event, ReportAccepted):
            self.reports.put_nowait(event.report)
        else:  # (raised here, asyncio would only log it)
            self.dropped.append(event)
            self.reports.put_nowait(None)

    def target(self) -> ReportTarget:
        return ReportTarget("127.0.0.1", self.port, SharedKey(KEY), 1)

    async def next(self) -> Report:
        report = await asyncio.wait_for(self.reports.get(), HANG)
        assert report is not None, f"a datagram was dropped: {self.dropped[-1]}"
        return report

    async def until(self, predicate: Callable[[Report], bool]) -> Report:
        """The first report from now on that ``predicate`` holds for."""
        async with asyncio.timeout(HANG):
            while not predicate(report := await self.next()):
                pass
        return report

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()




def config(tmp_path: Path, monitor: Any, **kw: Any) -> EdgeConfig:
    """An edge that reports only when told to (a long interval, no sampling)."""
    settings: dict[str, Any] = {"message_interval_ms": 3_600_000, "load_sample_ms": 0}
    settings.update(kw)
    return EdgeConfig("edge.example:1935", tmp_path / "targets.txt", tmp_path / "edge.guid",
                      monitor=monitor, **settings)


def keys(*names: str) -> tuple[int, ...]:
    return tuple(stream_key(n) for n in names)


async def test_reports_carry_the_monitors_streams_as_keys_each_once(tmp_path, balancer):
    monitor = ManualMonitor(3, streams=["live/b", "tv/news", "live/b", "live/s"])
    edge = EdgeDaemon(config(tmp_path, monitor, max_clients=250),
                      targets=[balancer.target()])
    await edge.start()
    try:
        first = await balancer.next()
        assert first.streams == keys("live/b", "tv/news", "live/s")  # the repeat dropped
        assert first.max_clients == 250 and first.draining is None
        assert edge.mbeans.get_attribute(SENDER_NAME, "Streams") == [
            "live/b", "tv/news", "live/s"]
        assert edge.mbeans.get_attribute(SENDER_NAME, "StreamsNotSent") == 0
        monitor.set_streams(["tv/news"])  # the order and the set follow the monitor
        await edge.refresh_and_send()
        assert (await balancer.next()).streams == keys("tv/news")
        monitor.set_streams([])
        await edge.refresh_and_send()
        assert (await balancer.next()).streams is None  # none: the extension is not sent
        monitor.set_streams(None)  # a monitor that cannot tell
        await edge.refresh_and_send()
        assert (await balancer.next()).streams is None
    finally:
        await edge.stop()


@pytest.mark.parametrize("max_streams, sent", [(2, 2), (0, 0), (MAX_STREAMS, 5)])
def test_max_streams_caps_the_keys_and_the_rest_are_counted(tmp_path, max_streams, sent):
    names = [f"live/s{n}" for n in range(5)]
    edge = EdgeDaemon(config(tmp_path, ManualMonitor(), max_streams=max_streams), targets=[])
    edge.streams = names
    report = edge.current_report()
    assert report.streams == (keys(*names[:sent]) or None)
    assert edge.streams_reported == names[:sent]
    assert edge.streams_not_sent == 5 - sent
    metrics = render_metrics(edge.mbeans).decode()
    assert f"lbmgmt_sender_streams_not_sent {5 - sent}" in metrics


def test_a_long_report_carries_the_streams_that_fit_and_counts_the_rest(tmp_path):
    edge = EdgeDaemon(config(tmp_path, ManualMonitor(), group="g" * 64,
                             private_address="p" * 255), targets=[])
    edge.streams = [f"live/s{n}" for n in range(MAX_STREAMS)]
    edge.load_error = "x" * 400  # (clipped to 200 bytes: the longest unhealthy reason)
    report = edge.current_report()
    assert report.streams is not None and 0 < len(report.streams) < MAX_STREAMS
    assert report.streams == keys(*edge.streams[:len(report.streams)])  # the first ones
    assert edge.streams_not_sent == MAX_STREAMS - len(report.streams)
    datagram = edge._sealer.seal(report, SharedKey(KEY), now=time.time())
    assert len(datagram) <= MAX_DATAGRAM


def test_a_name_no_client_can_ask_for_takes_no_room(tmp_path):
    edge = EdgeDaemon(config(tmp_path, ManualMonitor(), max_streams=2), targets=[])
    edge.streams = ["live/a", "x" * (MAX_NAME_BYTES + 1), "live/b"]
    assert edge.current_report().streams == keys("live/a", "live/b")
    assert edge.streams_not_sent == 1


class Garbled(ManualMonitor):
    def streams(self) -> Any:
        return "live/a"  # a string, not a list of names


async def test_a_monitor_whose_streams_are_not_names_has_failed(tmp_path, balancer):
    edge = EdgeDaemon(config(tmp_path, Garbled(2)), targets=[balancer.target()])
    await edge.start()
    try:
        report = await balancer.next()
        assert report.unhealthy == "monitor: monitor's streams() is not a list of names"
        assert edge.streams is None
    finally:
        await edge.stop()


@pytest.mark.parametrize("text, line, field, message", [
    ("max_streams = 65", 3, "edge.max_streams", f"at most {MAX_STREAMS}"),
    ("max_streams = -1", 3, "edge.max_streams", "at least 0"),
    ("max_clients = 0", 3, "edge.max_clients", "at least 1"),
    ('max_clients = "many"', 3, "edge.max_clients", "must be an integer"),
    ("drain_on_stop = 1", 3, "edge.drain_on_stop", "true or false"),
    ("drain_timeout_ms = -5", 3, "edge.drain_timeout_ms", "at least 0"),
    ("drain_timeout_ms = 86400001", 3, "edge.drain_timeout_ms", "at most 86400000"),
])
def test_the_settings_config_errors_name_file_line_and_field(tmp_path, text, line, field,
                                                             message):
    from lbmgmt.configfile import ConfigError

    path = tmp_path / "edge.toml"
    path.write_text(f'[edge]\nredirect_address = "a"\n{text}\n')
    with pytest.raises(ConfigError) as caught:
        load_edge_config(path)
    assert (caught.value.path, caught.value.line, caught.value.field) == (
        str(path), line, field)
    assert message in str(caught.value)


def test_the_settings_defaults_and_values(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('[edge]\nredirect_address = "a"\n')
    cfg = load_edge_config(path)
    assert (cfg.max_streams, cfg.max_clients, cfg.drain_on_stop, cfg.drain_timeout_ms) == (
        MAX_STREAMS, None, False, 600_000)
    path.write_text('[edge]\nredirect_address = "a"\nmax_streams = 0\nmax_clients = 900\n'
                    'drain_on_stop = true\ndrain_timeout_ms = 0\n')
    cfg = load_edge_config(path)
    assert (cfg.max_streams, cfg.max_clients, cfg.drain_on_stop, cfg.drain_timeout_ms) == (
        0, 900, True, 0)
