"""drain_on_stop: asked to stop, an edge takes no new clients and stops once it has none.

``request_stop`` is what SIGTERM and SIGINT call (``EdgeDaemon.run``); ``serve`` is
``run`` without the signal handlers. The drain's deadline is on the daemon's
``monotonic`` clock, which these tests drive by hand; the reports are read off a UDP
socket as a balancer reads them (``Balancer``). tests/e2e/test_edge_streams.py sends
a real process SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from lbmgmt.edge.daemon import EdgeDaemon
from lbmgmt.edge.mbeans import SENDER_DRAINING, SENDER_NAME
from lbmgmt.edge.monitors import ManualMonitor, MonitorError
from lbmgmt.management.errors import OperationFailed
from lbmgmt.management.server import Role
from lbmgmt.status import EdgeState
from tests.unit.test_edge_streams import HANG, Balancer, config

PAUSED, RUNNING, STOPPING = EdgeState.PAUSED, EdgeState.RUNNING, EdgeState.STOPPING


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingMonitor(ManualMonitor):
    """Says each read (``reads``); fails them while ``failing``."""

    def __init__(self, load: float) -> None:
        super().__init__(load)
        self.reads: asyncio.Queue[None] = asyncio.Queue()
        self.failing = False

    async def read(self) -> float:
        self.reads.put_nowait(None)
        if self.failing:
            raise MonitorError("the stat page does not answer")
        return self.load


def draining_edge(tmp_path, balancer: Balancer, monitor: ManualMonitor, clock: Any = None,
                  **kw: Any) -> EdgeDaemon:
    settings: dict[str, Any] = {"drain_on_stop": True, "drain_timeout_ms": 10_000}
    settings.update(kw)
    extra = {} if clock is None else {"monotonic": clock}
    return EdgeDaemon(config(tmp_path, monitor, **settings), targets=[balancer.target()],
                      **extra)


def messages(caplog, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "lbmgmt.edge" and r.levelno == level]


async def test_a_drain_says_paused_and_the_time_left_then_stops_at_load_0(tmp_path, balancer,
                                                                          caplog):
    caplog.set_level(logging.INFO, logger="lbmgmt")
    clock, monitor = Clock(), ManualMonitor(3)
    edge = draining_edge(tmp_path, balancer, monitor, clock)
    served = asyncio.create_task(edge.serve())
    try:
        assert (await balancer.next()).state is RUNNING
        edge.request_stop()  # SIGTERM
        report = await balancer.next()  # at once, not at the next interval (an hour)
        assert (report.state, report.draining, report.load) == (PAUSED, 10_000, 3)
        [said] = [r for r in messages(caplog, logging.INFO)
                  if r.getMessage().startswith("draining: no new clients")]
        assert said.fields["timeout_s"] == 10.0 and said.fields["load"] == 3  # type: ignore[attr-defined]
        assert edge.mbeans.get_attribute(SENDER_NAME, "Draining") == 10_000
        assert edge.mbeans.get_attribute(SENDER_NAME, "State") == "PAUSED"
        notes, _ = edge.mbeans.notifications.since(0)
        assert [n.type for n in notes] == [SENDER_DRAINING]

        clock.now += 4.0
        await edge.refresh_and_send()  # an interval's report
        report = await balancer.next()
        assert (report.state, report.draining) == (PAUSED, 6_000)
        assert not edge.stop_requested and not served.done()  # viewers are still watching

        monitor.set_load(0)  # the last one left
        await edge.refresh_and_send()
        await asyncio.wait_for(served, HANG)
        last = await balancer.until(lambda r: r.state is STOPPING)
        assert last.draining is None
        assert any(r.getMessage() == "drained: no client left; stopping"
                   for r in messages(caplog, logging.INFO))
        assert messages(caplog, logging.WARNING) == []
    finally:
        await edge.stop()


async def test_while_draining_the_monitor_is_read_and_load_0_ends_it(tmp_path, balancer):
    monitor = CountingMonitor(2)
    edge = draining_edge(tmp_path, balancer, monitor, load_sample_ms=10)
    served = asyncio.create_task(edge.serve())
    try:
        await balancer.next()
        edge.request_stop()
        await balancer.until(lambda r: r.draining is not None)
        while not monitor.reads.empty():
            monitor.reads.get_nowait()
        async with asyncio.timeout(HANG):
            for _ in range(3):  # sampled, as before the drain
                await monitor.reads.get()
        assert not served.done()
        monitor.set_load(0)  # no call from here: the loop's own sample sees it
        await asyncio.wait_for(served, HANG)
        await balancer.until(lambda r: r.state is STOPPING)
    finally:
        await edge.stop()


async def test_a_load_of_0_from_before_the_monitor_failed_does_not_end_it(tmp_path, balancer):
    clock, monitor = Clock(), CountingMonitor(0)
    edge = draining_edge(tmp_path, balancer, monitor, clock)
    served = asyncio.create_task(edge.serve())
    try:
        assert (await balancer.next()).load == 0
        monitor.failing = True  # the media server stops answering: its load is not known
        edge.request_stop()
        report = await balancer.until(lambda r: r.draining is not None)
        assert edge.load_error is not None and report.draining == 10_000
        assert edge.load == 0  # (the last load read: stale)
        await edge.refresh_and_send()  # still failing: still draining, not stopping
        assert (await balancer.next()).state is PAUSED and not edge.stop_requested
        monitor.failing = False
        await edge.refresh_and_send()  # it answers: 0
        await asyncio.wait_for(served, HANG)
    finally:
        await edge.stop()


async def test_at_the_timeout_it_stops_with_clients_left_and_says_so(tmp_path, balancer, caplog):
    clock, monitor = Clock(), ManualMonitor(5)
    edge = draining_edge(tmp_path, balancer, monitor, clock)
    served = asyncio.create_task(edge.serve())
    try:
        await balancer.next()
        edge.request_stop()
        await balancer.until(lambda r: r.draining is not None)
        clock.now += 9.999
        await edge.refresh_and_send()
        assert (await balancer.next()).draining == 1
        assert not served.done()
        clock.now += 0.001
        await edge.refresh_and_send()
        await asyncio.wait_for(served, HANG)
        await balancer.until(lambda r: r.state is STOPPING)
        [warned] = messages(caplog, logging.WARNING)
        assert warned.getMessage().startswith("drain timed out with clients left")
        assert warned.fields["load"] == 5  # type: ignore[attr-defined]
    finally:
        await edge.stop()


async def test_the_loop_wakes_at_the_deadline_by_itself(tmp_path, balancer):
    # No load sampling and an hour between reports: only the deadline wakes the loop.
    edge = draining_edge(tmp_path, balancer, ManualMonitor(5), drain_timeout_ms=50)
    served = asyncio.create_task(edge.serve())
    try:
        await balancer.next()
        edge.request_stop()
        await asyncio.wait_for(served, HANG)
        await balancer.until(lambda r: r.state is STOPPING)
    finally:
        await edge.stop()


async def test_a_second_stop_request_while_draining_stops_at_once(tmp_path, balancer, caplog):
    caplog.set_level(logging.INFO, logger="lbmgmt")
    edge = draining_edge(tmp_path, balancer, ManualMonitor(5), Clock())
    served = asyncio.create_task(edge.serve())
    try:
        await balancer.next()
        edge.request_stop()
        await balancer.until(lambda r: r.draining is not None)
        edge.request_stop()  # SIGTERM again, or SIGINT (ctrl-c)
        await asyncio.wait_for(served, HANG)
        await balancer.until(lambda r: r.state is STOPPING)
        assert any(r.getMessage() == "asked again to stop while draining: stopping now"
                   for r in messages(caplog, logging.INFO))
    finally:
        await edge.stop()


async def test_without_drain_on_stop_a_stop_request_stops_at_once(tmp_path, balancer):
    edge = draining_edge(tmp_path, balancer, ManualMonitor(5), Clock(), drain_on_stop=False)
    served = asyncio.create_task(edge.serve())
    try:
        await balancer.next()
        edge.request_stop()
        await asyncio.wait_for(served, HANG)
        after = await balancer.next()
        assert after.state is STOPPING and after.draining is None  # no drain in between
    finally:
        await edge.stop()


async def test_a_drain_timeout_of_0_reports_once_and_stops(tmp_path, balancer):
    edge = draining_edge(tmp_path, balancer, ManualMonitor(5), Clock(), drain_timeout_ms=0)
    served = asyncio.create_task(edge.serve())
    try:
        await balancer.next()
        edge.request_stop()
        await asyncio.wait_for(served, HANG)
        report = await balancer.next()
        assert (report.state, report.draining) == (PAUSED, 0)
        assert (await balancer.next()).state is STOPPING
    finally:
        await edge.stop()


async def test_no_unpausing_a_draining_edge(tmp_path, balancer):
    edge = draining_edge(tmp_path, balancer, ManualMonitor(5), Clock())
    served = asyncio.create_task(edge.serve())
    try:
        await balancer.next()
        edge.request_stop()
        await balancer.until(lambda r: r.draining is not None)
        with pytest.raises(OperationFailed, match="draining to stop: it takes no new clients"):
            await edge.mbeans.invoke(SENDER_NAME, "unpause", [], Role.READWRITE)
        await edge.pause()  # already taking no clients: nothing changes
        assert edge.state is PAUSED and edge.draining_ms() == 10_000
        assert not served.done()
    finally:
        await edge.stop()  # stop() itself stops at once, draining or not
        await asyncio.wait_for(served, HANG)


# -- what an outside-in attack found (each failed before its fix) ---------------------

class SlowStart(ManualMonitor):
    """Its first read waits for ``go``: a SIGTERM can come while the edge starts."""

    def __init__(self, load: float) -> None:
        super().__init__(load)
        self.go = asyncio.Event()
        self.waiting = asyncio.Event()

    async def read(self) -> float:
        self.waiting.set()
        await self.go.wait()
        return self.load


async def test_a_sigterm_while_the_edge_starts_drains_it_once_started(tmp_path, balancer):
    monitor = SlowStart(2)
    edge = draining_edge(tmp_path, balancer, monitor, message_interval_ms=60_000)
    served = asyncio.create_task(edge.serve())
    try:
        await asyncio.wait_for(monitor.waiting.wait(), HANG)
        edge.request_stop()  # SIGTERM before the first report
        monitor.go.set()
        report = await balancer.until(lambda r: r.draining is not None)
        assert report.state is PAUSED and not served.done()
    finally:
        await edge.stop()


async def test_sigint_stops_at_once_even_while_draining(tmp_path, balancer):
    edge = draining_edge(tmp_path, balancer, ManualMonitor(5))
    served = asyncio.create_task(edge.serve())
    try:
        await balancer.next()
        edge.request_stop()  # SIGTERM: drains
        await balancer.until(lambda r: r.draining is not None)
        edge.request_stop_now()  # ctrl-c
        await asyncio.wait_for(served, HANG)
        await balancer.until(lambda r: r.state is STOPPING)
    finally:
        await edge.stop()


async def test_a_monitor_failing_during_a_drain_is_said_in_the_reports(tmp_path, balancer):
    monitor = CountingMonitor(4)
    edge = draining_edge(tmp_path, balancer, monitor)
    served = asyncio.create_task(edge.serve())
    try:
        await balancer.next()
        edge.request_stop()
        await balancer.until(lambda r: r.draining is not None)
        monitor.failing = True
        for _ in range(3):  # past the samples let pass
            await edge.refresh_and_send()
        report = await balancer.until(lambda r: r.unhealthy is not None)
        assert report.draining is not None and "does not answer" in report.unhealthy
        assert not served.done()  # a failed read is no load of 0
    finally:
        await edge.stop()


async def test_a_monitor_failing_at_start_takes_the_edge_out_at_once(tmp_path, balancer):
    monitor = CountingMonitor(0)
    monitor.failing = True
    edge = EdgeDaemon(config(tmp_path, monitor, load_sample_ms=50),
                      targets=[balancer.target()])
    await edge.start()
    try:
        first = await balancer.next()
        assert first.state is PAUSED and "does not answer" in (first.unhealthy or "")
    finally:
        await edge.stop()


async def test_a_stream_name_that_is_not_text_is_left_out_not_the_report(tmp_path, balancer):
    monitor = ManualMonitor(1)
    edge = EdgeDaemon(config(tmp_path, monitor), targets=[balancer.target()])
    await edge.start()
    try:
        await balancer.next()
        monitor.streams = lambda: ["live/\ud800x", "live/ok"]  # type: ignore[method-assign]
        await edge.refresh_and_send()
        report = await balancer.next()
        assert report.streams is not None and len(report.streams) == 1
        assert edge.streams_reported == ["live/ok"] and edge.streams_not_sent == 1
    finally:
        await edge.stop()
