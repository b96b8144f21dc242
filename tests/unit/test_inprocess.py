"""Both daemons as objects in one event loop, as an embedding program would run them."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from lbmgmt.balancer.daemon import bind_udp
from lbmgmt.edge.config import EdgeConfig
from lbmgmt.edge.daemon import EdgeDaemon
from lbmgmt.edge.monitors import ManualMonitor
from lbmgmt.endpoints import Endpoint
from lbmgmt.fleet.inprocess import InProcessFleet
from lbmgmt.status import EdgeState


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def until(predicate, timeout=30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
def test_wildcard_udp_bind_is_dual_stack():
    sock = bind_udp(Endpoint("", 0))
    try:
        port = sock.getsockname()[1]
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_DGRAM) as tx:
                tx.sendto(b"x", (host, port))
            sock.setblocking(True)
            sock.settimeout(2)
            assert sock.recv(10) == b"x"
    finally:
        sock.close()


async def test_balancer_and_edges_in_one_loop(tmp_path):
    async with InProcessFleet(tmp_path) as fleet:
        balancer = await fleet.start_balancer(mgmt_port=None, message_timeout_ms=1000)
        edges = [await fleet.add_edge(f"e{n}", load, address=f"e{n}.example",
                                      interval_ms=100, mgmt_port=None)
                 for n, load in enumerate((5, 1, 9))]
        await until(lambda: len(balancer.core.registry) == 3)
        assert fleet.redirect() == "e1.example"

        edges[1].monitor.set_load(100)  # type: ignore[attr-defined]
        await until(lambda: balancer.core.registry.get(edges[1].guid).load == 100)
        assert fleet.redirect() == "e0.example"
        assert all(link.last_result == "ok" for e in edges for link in e.links)
        await until(lambda: edges[0].reports_sent >= 2)
        assert edges[0].send_errors == 0

        await edges[0].pause()
        await until(lambda: balancer.core.registry.get(edges[0].guid).state is EdgeState.PAUSED)
        await edges[2].stop()
        await until(lambda: balancer.core.registry.get(edges[2].guid) is None)


async def test_reload_targets_keeps_counters_and_reports_to_new_ones(tmp_path):
    rx = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for s in rx:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    targets = tmp_path / "targets.txt"
    targets.write_text(f"127.0.0.1,{rx[0].getsockname()[1]},k-0123456789abcdef\n")
    edge = EdgeDaemon(EdgeConfig(redirect_address="a", targets_file=targets,
                                 guid_file=tmp_path / "g", message_interval_ms=60_000))
    await edge.start()
    try:
        await until(lambda: edge.links[0].reports_sent == 1)
        first = edge.links[0]
        targets.write_text(f"127.0.0.1,{rx[0].getsockname()[1]},k-0123456789abcdef\n"
                           f"127.0.0.1,{rx[1].getsockname()[1]},k2-0123456789abcdef\n")
        edge.reload_targets()
        assert edge.links[0] is first and len(edge.links) == 2
        await until(lambda: edge.links[1].reports_sent == 1)  # at once, not in 60 s
        assert first.reports_sent == 2
        targets.write_text("bad line\n")
        from lbmgmt.configfile import ConfigError
        with pytest.raises(ConfigError):
            edge.reload_targets()
        assert len(edge.links) == 2  # a bad file keeps the old targets
    finally:
        await edge.stop()
        for s in rx:
            s.close()


async def test_reload_targets_through_management_reports_file_and_line(tmp_path):
    from lbmgmt.management import errors
    from lbmgmt.management.objectname import ObjectName
    from lbmgmt.management.server import Role

    targets = tmp_path / "targets.txt"
    targets.write_text("127.0.0.1,9,k-0123456789abcdef\n")
    edge = EdgeDaemon(EdgeConfig(redirect_address="a", targets_file=targets,
                                 guid_file=tmp_path / "g", message_interval_ms=60_000))
    targets.write_text("# ok\nnot a target\n")
    with pytest.raises(errors.OperationFailed) as err:
        await edge.mbeans.invoke(ObjectName.parse("lbmgmt:type=Sender"), "reloadTargets", [],
                                 Role.READWRITE)
    assert f"{targets}:2: line: expected 'host,port,key'" in err.value.message
    assert len(edge.links) == 1  # the old targets stay


class FlakyMonitor(ManualMonitor):
    """A monitor plug-in with a bug: it raises what no monitor is documented to raise."""

    def __init__(self, load: float) -> None:
        super().__init__(load)
        self.broken = False

    async def read(self) -> float:
        if self.broken:
            raise KeyError("no such stream")
        return await super().read()


async def test_a_failing_monitor_takes_its_edge_out_and_back_whatever_it_raises(tmp_path,
                                                                               caplog):
    async with InProcessFleet(tmp_path) as fleet:
        balancer = await fleet.start_balancer(mgmt_port=None, message_timeout_ms=5000)
        monitor = FlakyMonitor(1)
        sick = await fleet.add_edge("sick", address="sick.example", interval_ms=50,
                                    monitor=monitor, mgmt_port=None)
        await fleet.add_edge("well", 5, address="well.example", interval_ms=50,
                             mgmt_port=None)
        await until(lambda: len(balancer.core.registry) == 2)
        assert fleet.redirect() == "sick.example"  # the least loaded, while healthy

        monitor.broken = True
        entry = lambda: balancer.core.registry.get(sick.guid)  # noqa: E731
        await until(lambda: entry().report.unhealthy is not None)  # type: ignore[union-attr]
        assert entry().state is EdgeState.PAUSED  # type: ignore[union-attr]
        assert entry().report.unhealthy == "monitor: KeyError: 'no such stream'"  # type: ignore[union-attr]
        assert sick.state is EdgeState.RUNNING  # its operator did not pause it
        assert {fleet.redirect() for _ in range(5)} == {"well.example"}
        assert sick._task is not None and not sick._task.done()  # the loop goes on

        monitor.broken = False
        await until(lambda: entry().state is EdgeState.RUNNING)  # type: ignore[union-attr]
        assert entry().report.unhealthy is None  # type: ignore[union-attr]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said.count("monitor failed; taking no new clients until it answers") == 1
    assert said.count("monitor answers again; taking clients") == 1


async def test_a_load_move_is_reported_at_once_and_a_small_one_waits(tmp_path):
    async with InProcessFleet(tmp_path) as fleet:
        balancer = await fleet.start_balancer(mgmt_port=None, message_timeout_ms=600_000)
        monitor = ManualMonitor(10)
        edge = await fleet.add_edge("e", interval_ms=300_000, monitor=monitor, mgmt_port=None)
        edge.set_load_sample(20)
        entry = lambda: balancer.core.registry.get(edge.guid)  # noqa: E731
        await until(lambda: entry() is not None)
        monitor.set_load(12)  # +2 (20 %): the next sample reports it, not in five minutes
        await until(lambda: entry().load == 12)  # type: ignore[union-attr]
        assert edge.quick_reports == 1
        monitor.set_load(12.5)  # under max(1, 10 %): waits for the interval ...
        monitor.set_load(13.5)  # ... but the sum is a move of its own
        await until(lambda: entry().load == 13.5)  # type: ignore[union-attr]
        assert edge.quick_reports == 2


def test_what_counts_as_a_move(tmp_path):
    from lbmgmt.edge.config import EdgeConfig
    from lbmgmt.edge.daemon import EdgeDaemon
    edge = EdgeDaemon(EdgeConfig("e:1", tmp_path / "t", tmp_path / "g"), targets=[])
    for reported, now, moved in ((0, 0.9, False), (0, 1, True), (50, 54.9, False),
                                 (50, 55, True), (50, 45, True), (5, 4.2, False)):
        edge._reported_load, edge.load = reported, now
        assert edge._moved() is moved, (reported, now)
    edge.load_error = "monitor: down"  # a health change is a move whatever the load
    assert edge._moved()
