"""One balancer, a few edges, all real processes on loopback, observed over HTTP and UDP.

Intervals are short (200 ms reports, 1 s timeout) so the suite stays quick;
the bounds asserted are the product's promises, not measurements of speed.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from lbmgmt.edge.config import EdgeConfig
from lbmgmt.edge.daemon import EdgeDaemon
from lbmgmt.edge.monitors import ManualMonitor
from lbmgmt.edge.targets import Target
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey
from tests.e2e.fleet import (HOST, SIGKILL, SIGTERM, Balancer, Fleet, wait_for_file,
                             wait_until)

pytestmark = pytest.mark.e2e


async def ready(fleet: Fleet, balancer: Balancer) -> None:
    async def answering():
        return await fleet.server_info(balancer) is not None
    await wait_until(answering, 15, what=f"{balancer.name} answering HTTP")


async def has(fleet: Fleet, balancer: Balancer, addresses: set[str]) -> bool:
    return set(await fleet.servers(balancer)) == addresses


async def test_three_edges_appear_within_one_interval(fleet):
    lb = fleet.balancer()
    await ready(fleet, lb)
    edges = [fleet.edge(f"e{i}", [lb], interval_ms=500) for i in range(3)]
    # The GUID file is written just before the first report; from then on, one interval.
    started = max(wait_for_file(e.guid_file) for e in edges)

    async def all_three():
        return await has(fleet, lb, {e.address for e in edges})
    await wait_until(all_three, 5, what="three edges listed")
    assert time.monotonic() - started <= 0.5
    servers = await fleet.servers(lb)
    for edge in edges:
        row = servers[edge.address]
        assert row["guid"] == edge.guid and row["state"] == "RUNNING"
        assert row["available"] == "true"


class Listener:
    """A stand-in media server: its load is the TCP connections we open to it."""

    def __init__(self) -> None:
        self.server = socket.create_server((HOST, 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []

    def connect(self, n: int) -> None:
        for _ in range(n):
            self.conns.append(socket.create_connection((HOST, self.port)))
            self.conns.append(self.server.accept()[0])

    def close(self) -> None:
        for s in self.conns + [self.server]:
            s.close()


async def test_redirects_follow_real_load(fleet):
    lb = fleet.balancer()
    listeners = {name: Listener() for name in "abc"}
    try:
        edges = {name: fleet.edge(name, [lb], monitor=f'[monitor]\ntype = "tcp-connections"\n'
                                                      f'ports = [{lis.port}]')
                 for name, lis in listeners.items()}
        listeners["a"].connect(6)
        listeners["c"].connect(3)
        await ready(fleet, lb)

        async def loads_seen():
            servers = await fleet.servers(lb)
            return {a: s["load"] for a, s in servers.items()} == {
                edges["a"].address: "6", edges["b"].address: "0", edges["c"].address: "3"}
        await wait_until(loads_seen, 10, what="loads 6/0/3 reported")
        picks = [await fleet.redirect(lb) for _ in range(9)]
        counts = Counter(picks)
        assert picks[0] == edges["b"].address  # the least loaded first
        assert counts[edges["a"].address] == 0  # the busiest gets none of 9
        assert counts[edges["b"].address] > counts[edges["c"].address] > 0

        # Load moves: a empties, b fills up; the next clients follow.
        for s in listeners["a"].conns:
            s.close()
        listeners["a"].conns.clear()
        listeners["b"].connect(8)

        async def moved():
            servers = await fleet.servers(lb)
            return (servers[edges["a"].address]["load"], servers[edges["b"].address]["load"]) \
                == ("0", "8")
        await wait_until(moved, 10, what="new loads reported")
        assert await fleet.redirect(lb) == edges["a"].address
    finally:
        for lis in listeners.values():
            lis.close()


async def test_pause_leaves_redirects_within_half_a_second(fleet, tmp_path: Path):
    # Real defaults (2.5 s reports, 5 s timeout): only an immediate report meets 0.5 s.
    lb = fleet.balancer(timeout_ms=5000)
    busy = fleet.edge("busy", [lb], monitor='[monitor]\ntype = "manual"\nload = 1000')
    await ready(fleet, lb)
    edge = EdgeDaemon(
        EdgeConfig(redirect_address="inproc.example:1935", targets_file=tmp_path / "unused",
                   guid_file=tmp_path / "inproc.guid", message_interval_ms=2500,
                   monitor=ManualMonitor(0)),
        targets=[Target(HOST, lb.udp_port, SharedKey(lb.key), 1)])
    await edge.start()
    try:
        async def both():
            return await has(fleet, lb, {busy.address, "inproc.example:1935"})
        await wait_until(both, 10, what="both edges listed")
        assert await fleet.redirect(lb) == "inproc.example:1935"

        await edge.pause()
        paused_at = time.monotonic()

        async def gone_from_redirects():
            return await fleet.redirect(lb) == busy.address
        await wait_until(gone_from_redirects, 2, what="paused edge out of redirects")
        assert time.monotonic() - paused_at <= 0.5
        picks = {await fleet.redirect(lb) for _ in range(20)}
        assert picks == {busy.address}
        row = (await fleet.servers(lb))["inproc.example:1935"]
        assert (row["state"], row["available"]) == ("PAUSED", "false")  # listed, not chosen

        await edge.unpause()

        async def back():
            return await fleet.redirect(lb) == "inproc.example:1935"
        await wait_until(back, 0.5, what="unpaused edge back in redirects")
    finally:
        await edge.stop()
    assert "inproc.example:1935" not in await fleet.servers(lb)  # stop report: out at once


async def test_sigterm_leaves_at_once_sigkill_after_the_timeout(fleet):
    lb = fleet.balancer()
    term, kill, stay = (fleet.edge(n, [lb]) for n in ("term", "kill", "stay"))
    await ready(fleet, lb)

    async def all_in():
        return await has(fleet, lb, {term.address, kill.address, stay.address})
    await wait_until(all_in, 10, what="three edges listed")

    term.signal(SIGTERM)
    t0 = time.monotonic()

    async def term_gone():
        return term.address not in await fleet.servers(lb)
    await wait_until(term_gone, 2, what="SIGTERM'd edge gone")
    assert time.monotonic() - t0 <= 0.5
    assert term.wait() == 0

    kill.signal(SIGKILL)
    t0 = time.monotonic()
    await asyncio.sleep(fleet.timeout_ms / 1000 * 0.6)
    assert kill.address in await fleet.servers(lb)  # no stop report: kept until the timeout

    async def kill_gone():
        return kill.address not in await fleet.servers(lb)
    await wait_until(kill_gone, 3, what="SIGKILL'd edge gone")
    elapsed = time.monotonic() - t0
    # The timeout runs from the last report, up to one interval before the kill:
    timeout, interval = fleet.timeout_ms / 1000, fleet.interval_ms / 1000
    assert timeout - interval - 0.05 <= elapsed  # not before the timeout...
    assert elapsed <= timeout + 0.6  # ...and soon after it
    assert set(await fleet.servers(lb)) == {stay.address}


async def test_restarted_balancer_has_the_pool_back_within_one_interval(fleet):
    lb = fleet.balancer()
    edges = [fleet.edge(f"e{i}", [lb], interval_ms=500) for i in range(3)]
    await ready(fleet, lb)
    addresses = {e.address for e in edges}

    async def full():
        return await has(fleet, lb, addresses)
    await wait_until(full, 10, what="pool full")

    lb.signal(SIGTERM)
    assert lb.wait() == 0
    again = fleet.balancer("lb2", udp_port=lb.udp_port, http_port=lb.http_port)
    await ready(fleet, again)
    # Ready means HTTP answers; the pool must be back one report interval later.
    took = await wait_until(full, 5, what="pool back after restart")
    # One interval (0.5 s), plus what observing costs: the 10 ms poll, an HTTP round trip
    # and the edges' own timer drift.
    assert took <= 0.5 + 0.1


async def test_two_targets_two_balancers_one_down(fleet):
    lb1, lb2 = fleet.balancer("lb1"), fleet.balancer("lb2", key="another key")
    edge = fleet.edge("both", [lb1, lb2])
    await ready(fleet, lb1)
    await ready(fleet, lb2)

    async def on_both():
        return await has(fleet, lb1, {edge.address}) and await has(fleet, lb2, {edge.address})
    await wait_until(on_both, 10, what="edge on both balancers")

    lb2.signal(SIGKILL)
    lb2.wait()
    before = int((await fleet.servers(lb1))[edge.address]["messageCount"])
    await asyncio.sleep(fleet.timeout_ms / 1000 * 2)
    row = (await fleet.servers(lb1))[edge.address]
    assert row["available"] == "true"
    assert float(row["secondsSinceReport"]) < 0.5
    assert int(row["messageCount"]) >= before + 5  # reports kept flowing every 200 ms


async def test_unreachable_and_unresolvable_targets_do_not_stop_the_others(fleet):
    lb = fleet.balancer()
    edge = fleet.edge("e", [("no-such-host.invalid", 1934, "k"), (HOST, 9, "k"), lb])
    await ready(fleet, lb)

    async def listed():
        return await has(fleet, lb, {edge.address})
    await wait_until(listed, 10, what="edge listed despite bad targets")
    first = int((await fleet.servers(lb))[edge.address]["messageCount"])
    await asyncio.sleep(1.0)
    row = (await fleet.servers(lb))[edge.address]
    assert int(row["messageCount"]) >= first + 3
    assert float(row["secondsSinceReport"]) < 0.5


async def test_forged_and_replayed_datagrams_are_dropped_counted_and_change_nothing(fleet):
    lb = fleet.balancer()
    await ready(fleet, lb)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dest = (HOST, lb.udp_port)
    try:
        # A wrong key: dropped, counted, not listed.
        forger = ReportSealer(uuid.uuid4())
        running = Report(EdgeState.RUNNING, "forged.example:1935", 0, 200)
        for _ in range(3):
            sock.sendto(forger.seal(running, SharedKey("guessed"), now=time.time()), dest)
        sock.sendto(b"\x03" * 1537, dest)  # oversize
        sock.sendto(b"LB\x01", dest)  # truncated

        # A real edge's datagrams (the test holds the key), then a replay after its stop.
        key = SharedKey(lb.key)
        edge = ReportSealer(uuid.uuid4())
        live = edge.seal(Report(EdgeState.RUNNING, "real.example:1935", 1, 200), key,
                         now=time.time())
        sock.sendto(live, dest)

        async def real_listed():
            return await has(fleet, lb, {"real.example:1935"})
        await wait_until(real_listed, 5, what="real edge listed")
        sock.sendto(edge.seal(Report(EdgeState.STOPPING, "real.example:1935", 1, 200), key,
                              now=time.time()), dest)

        async def real_gone():
            return await has(fleet, lb, set())
        await wait_until(real_gone, 2, what="stopped edge gone")
        sock.sendto(live, dest)  # replayed: must not bring it back
        sock.sendto(live, dest)

        async def counted():
            root = await fleet.server_info(lb)
            drops = {d.get("reason"): int(d.get("count")) for d in root.iter("Drop")}
            return drops == {"bad-auth": 3, "oversize": 1, "malformed": 1, "replay": 2,
                             "stale": 0}
        await wait_until(counted, 2, what="drops counted by reason")
        assert await fleet.servers(lb) == {}
        assert await fleet.redirect(lb) is None
    finally:
        sock.close()


async def test_restarted_edge_replaces_its_own_entry(fleet):
    lb = fleet.balancer(timeout_ms=5000)
    edge = fleet.edge("e", [lb])
    await ready(fleet, lb)

    async def listed():
        return await has(fleet, lb, {edge.address})
    await wait_until(listed, 10, what="edge listed")
    guid = edge.guid
    edge.signal(SIGKILL)
    edge.wait()
    again = fleet.edge("e", [lb])  # same config, same GUID file, new boot id

    async def fresh():
        row = (await fleet.servers(lb)).get(edge.address)
        return row is not None and float(row["secondsSinceReport"]) < 0.1
    await asyncio.sleep(0.3)
    await wait_until(fresh, 10, what="restarted edge reporting")
    root = await fleet.server_info(lb)
    assert root.get("serverCount") == "1"
    assert [s.findtext("guid") for s in root.iter("Server")] == [guid] == [again.guid]
    again.signal(SIGTERM)  # the new boot's stop report is honoured

    async def gone():
        return await has(fleet, lb, set())
    await wait_until(gone, 0.5, what="restarted edge gone after SIGTERM")


async def test_sighup_reloads_targets_and_reports_to_new_ones_at_once(fleet):
    lb1 = fleet.balancer("lb1", timeout_ms=20_000)
    lb2 = fleet.balancer("lb2", key="second key", timeout_ms=20_000)
    await ready(fleet, lb1)
    await ready(fleet, lb2)
    edge = fleet.edge("e", [lb1], interval_ms=10_000)  # after lb1 is up: one report is enough

    async def on_lb1():
        return await has(fleet, lb1, {edge.address})
    await wait_until(on_lb1, 10, what="edge on lb1")
    assert await fleet.servers(lb2) == {}
    targets = fleet.workdir / "e.targets"
    targets.write_text(targets.read_text() + f"127.0.0.1,{lb2.udp_port},{lb2.key}\n")
    edge.signal(signal.SIGHUP)

    async def on_lb2():
        return await has(fleet, lb2, {edge.address})
    took = await wait_until(on_lb2, 3, what="edge on lb2 after SIGHUP")
    assert took < 1.0  # the next tick is 10 s away: the reload reported at once

    targets.write_text("broken\n")
    edge.signal(signal.SIGHUP)
    await asyncio.sleep(0.3)
    assert edge.popen.poll() is None  # a bad file is logged and the old targets kept
    assert "targets not reloaded" in edge.stderr
