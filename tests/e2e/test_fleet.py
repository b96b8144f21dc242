"""One balancer, a few edges, all real processes on loopback, observed over HTTP and UDP.

Nothing here bounds how long a real process takes: where a promise is "at once"
(the first report, pause, stop, a reload), the ordinary path is made minutes
long (a long report interval or timeout) so that only the immediate report can
pass within the generous deadline. How fast these are is measured by
``python -m bench.react`` (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
import uuid
from collections import Counter

import pytest

from lbmgmt.edge.targets import ReportTarget
from lbmgmt.fleet.inprocess import InProcessFleet
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey
from tests.e2e.fleet import HOST, Balancer, Fleet, wait_for_text, wait_until
from tests.e2e.test_management import Rpc

pytestmark = pytest.mark.e2e

MINUTES = 600_000  # ms: a report interval or timeout no test waits for


async def ready(fleet: Fleet, balancer: Balancer) -> None:
    async def answering():
        return await fleet.server_info(balancer) is not None
    await wait_until(answering, what=f"{balancer.name} answering HTTP")


async def has(fleet: Fleet, balancer: Balancer, addresses: set[str]) -> bool:
    return set(await fleet.servers(balancer)) == addresses


async def test_edges_report_at_start_not_after_an_interval(fleet):
    lb = fleet.balancer(timeout_ms=2 * MINUTES)
    await ready(fleet, lb)
    edges = [fleet.edge(f"e{i}", [lb], interval_ms=MINUTES) for i in range(3)]

    async def all_three():
        return await has(fleet, lb, {e.address for e in edges})
    await wait_until(all_three, what="three edges listed (their first report, sent at start)")
    servers = await fleet.servers(lb)
    for edge in edges:
        row = servers[edge.address]
        assert row["guid"] == edge.guid and row["state"] == "RUNNING"
        assert row["available"] == "true" and row["messageCount"] == "1"


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
    # the listeners bind first: a port the kernel hands them can then not be one the
    # balancer was given (free_port) and has not bound yet
    listeners = {name: Listener() for name in "abc"}
    lb = fleet.balancer()
    try:
        edges = {name: fleet.edge(name, [lb], monitor={"type": "tcp-connections",
                                                       "ports": [lis.port]})
                 for name, lis in listeners.items()}
        listeners["a"].connect(6)
        listeners["c"].connect(3)
        await ready(fleet, lb)

        async def loads_seen():
            servers = await fleet.servers(lb)
            return {a: s["load"] for a, s in servers.items()} == {
                edges["a"].address: "6", edges["b"].address: "0", edges["c"].address: "3"}
        await wait_until(loads_seen, what="loads 6/0/3 reported")
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
        await wait_until(moved, what="new loads reported")
        assert await fleet.redirect(lb) == edges["a"].address
    finally:
        for lis in listeners.values():
            lis.close()


async def test_pause_unpause_and_stop_are_reported_at_once(fleet, tmp_path):
    # The in-process edge reports every 10 minutes and the balancer's timeout is longer:
    # only the immediate reports on pause, unpause and stop can show within the deadline.
    lb = fleet.balancer(timeout_ms=2 * MINUTES)
    busy = fleet.edge("busy", [lb], monitor={"type": "manual", "load": 1000})
    await ready(fleet, lb)
    local = InProcessFleet(tmp_path, key=lb.key)
    edge = await local.add_edge("inproc", 0, address="inproc.example:1935",
                                interval_ms=MINUTES, mgmt_port=None,
                                targets=[ReportTarget(HOST, lb.udp_port, SharedKey(lb.key), 1)])
    try:
        async def both():
            return await has(fleet, lb, {busy.address, "inproc.example:1935"})
        await wait_until(both, what="both edges listed")
        assert await fleet.redirect(lb) == "inproc.example:1935"

        await edge.pause()

        async def gone_from_redirects():
            return await fleet.redirect(lb) == busy.address
        await wait_until(gone_from_redirects, what="paused edge out of redirects")
        picks = {await fleet.redirect(lb) for _ in range(20)}
        assert picks == {busy.address}
        row = (await fleet.servers(lb))["inproc.example:1935"]
        assert (row["state"], row["available"]) == ("PAUSED", "false")  # listed, not chosen

        await edge.unpause()

        async def back():
            return await fleet.redirect(lb) == "inproc.example:1935"
        await wait_until(back, what="unpaused edge back in redirects")
    finally:
        await local.stop()

    async def stopped():  # the stop report: out at once, not after the timeout
        return "inproc.example:1935" not in await fleet.servers(lb)
    await wait_until(stopped, what="stopped edge out of the pool")


async def left_reasons(rpc: Rpc) -> dict[str, str]:
    batch = await rpc.ok("pollNotifications", 0, 0, ["lbmgmt.server.left"])
    return {n["data"]["guid"]: n["data"]["reason"] for n in batch["notifications"]}


async def test_sigterm_leaves_by_its_stop_report_sigkill_by_the_timeout(fleet):
    lb = fleet.balancer()
    term, kill, stay = (fleet.edge(n, [lb]) for n in ("term", "kill", "stay"))
    await ready(fleet, lb)

    async def all_in():
        return await has(fleet, lb, {term.address, kill.address, stay.address})
    await wait_until(all_in, what="three edges listed")
    rpc = Rpc(fleet.http, lb.mgmt_url)

    term.signal(signal.SIGTERM)
    assert term.wait() == 0

    async def term_gone():
        return term.guid in await left_reasons(rpc)
    await wait_until(term_gone, what="SIGTERM'd edge gone")
    kill.signal(signal.SIGKILL)
    kill.wait()

    async def kill_gone():
        return kill.guid in await left_reasons(rpc)
    await wait_until(kill_gone, what="SIGKILL'd edge gone")
    # SIGTERM sends a stopping report; SIGKILL leaves only silence, so the timeout.
    assert await left_reasons(rpc) == {term.guid: "stopped", kill.guid: "timed-out"}
    assert set(await fleet.servers(lb)) == {stay.address}


async def test_restarted_balancer_has_the_pool_back(fleet):
    lb = fleet.balancer()
    edges = [fleet.edge(f"e{i}", [lb], interval_ms=500) for i in range(3)]
    await ready(fleet, lb)
    addresses = {e.address for e in edges}

    async def full():
        return await has(fleet, lb, addresses)
    await wait_until(full, what="pool full")

    lb.signal(signal.SIGTERM)
    assert lb.wait() == 0
    again = fleet.balancer("lb2", udp_port=lb.udp_port, http_port=lb.http_port)
    await ready(fleet, again)
    await wait_until(full, what="pool back after restart")


async def message_count(fleet: Fleet, lb: Balancer, address: str) -> int:
    row = (await fleet.servers(lb)).get(address)
    return int(row["messageCount"]) if row else 0


async def test_two_targets_two_balancers_one_down(fleet):
    lb1, lb2 = fleet.balancer("lb1"), fleet.balancer("lb2", key="another shared key")
    edge = fleet.edge("both", [lb1, lb2])
    await ready(fleet, lb1)
    await ready(fleet, lb2)

    async def on_both():
        return await has(fleet, lb1, {edge.address}) and await has(fleet, lb2, {edge.address})
    await wait_until(on_both, what="edge on both balancers")

    lb2.signal(signal.SIGKILL)
    lb2.wait()
    before = await message_count(fleet, lb1, edge.address)

    async def kept_reporting():  # to lb1, while lb2 is gone
        return await message_count(fleet, lb1, edge.address) >= before + 5
    await wait_until(kept_reporting, what="reports to lb1 after lb2 died")
    assert (await fleet.servers(lb1))[edge.address]["available"] == "true"


async def test_unreachable_and_unresolvable_targets_do_not_stop_the_others(fleet):
    lb = fleet.balancer()
    edge = fleet.edge("e", [("no-such-host.invalid", 1934, lb.key), (HOST, 9, lb.key), lb])
    await ready(fleet, lb)

    async def listed():
        return await has(fleet, lb, {edge.address})
    await wait_until(listed, what="edge listed despite bad targets")
    first = await message_count(fleet, lb, edge.address)

    async def keeps_reporting():
        return await message_count(fleet, lb, edge.address) >= first + 3
    await wait_until(keeps_reporting, what="reports keep coming")
    assert (await fleet.servers(lb))[edge.address]["available"] == "true"


async def test_forged_and_replayed_datagrams_are_dropped_counted_and_change_nothing(fleet):
    lb = fleet.balancer(timeout_ms=2 * MINUTES)  # gone only by its stopping report
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
        await wait_until(real_listed, what="real edge listed")
        sock.sendto(edge.seal(Report(EdgeState.STOPPING, "real.example:1935", 1, 200), key,
                              now=time.time()), dest)

        async def real_gone():
            return await has(fleet, lb, set())
        await wait_until(real_gone, what="stopped edge gone")
        sock.sendto(live, dest)  # replayed: must not bring it back
        sock.sendto(live, dest)

        async def counted():
            root = await fleet.server_info(lb)
            drops = {d.get("reason"): int(d.get("count")) for d in root.iter("Drop")}
            return drops == {"bad-auth": 3, "oversize": 1, "malformed": 1, "replay": 2,
                             "stale": 0, "throttled": 0}
        await wait_until(counted, what="drops counted by reason")
        assert await fleet.servers(lb) == {}
        assert await fleet.redirect(lb) is None
    finally:
        sock.close()


async def test_restarted_edge_replaces_its_own_entry(fleet):
    lb = fleet.balancer(timeout_ms=2 * MINUTES)  # the killed boot never times out here
    edge = fleet.edge("e", [lb])
    await ready(fleet, lb)

    async def listed():
        return await has(fleet, lb, {edge.address})
    await wait_until(listed, what="edge listed")
    guid = edge.guid
    edge.signal(signal.SIGKILL)
    edge.wait()
    # Same config and GUID file, a new boot id; a load the first boot never reported.
    again = fleet.edge("e", [lb], monitor={"type": "manual", "load": 7})

    async def new_boot_reporting():
        row = (await fleet.servers(lb)).get(edge.address)
        return row is not None and row["load"] == "7"
    await wait_until(new_boot_reporting, what="restarted edge reporting")
    root = await fleet.server_info(lb)
    assert root.get("serverCount") == "1"
    assert [s.findtext("guid") for s in root.iter("Server")] == [guid] == [again.guid]
    again.signal(signal.SIGTERM)  # the new boot's stop report is honoured

    async def gone():
        return await has(fleet, lb, set())
    await wait_until(gone, what="restarted edge gone after SIGTERM")


async def test_sighup_reloads_targets_and_reports_to_new_ones_at_once(fleet):
    lb1 = fleet.balancer("lb1", timeout_ms=2 * MINUTES)
    lb2 = fleet.balancer("lb2", key="second shared key", timeout_ms=2 * MINUTES)
    await ready(fleet, lb1)
    await ready(fleet, lb2)
    edge = fleet.edge("e", [lb1], interval_ms=MINUTES)  # after lb1 is up: one report is enough

    async def on_lb1():
        return await has(fleet, lb1, {edge.address})
    await wait_until(on_lb1, what="edge on lb1")
    assert await fleet.servers(lb2) == {}
    targets = fleet.workdir / "e.targets"
    targets.write_text(targets.read_text() + f"127.0.0.1,{lb2.udp_port},{lb2.key}\n")
    edge.signal(signal.SIGHUP)

    async def on_lb2():  # the next tick is 10 minutes away: only the reload reports now
        return await has(fleet, lb2, {edge.address})
    await wait_until(on_lb2, what="edge on lb2 after SIGHUP")

    targets.write_text("broken\n")
    edge.signal(signal.SIGHUP)
    await wait_for_text(fleet.workdir / "e.err", "targets not reloaded")
    assert edge.running  # a bad file is logged and the old targets kept


class CaptureRelay(asyncio.DatagramProtocol):
    """Passes an edge's reports to a balancer and keeps a copy of each, as an attacker
    on the path would."""

    def __init__(self, to: tuple[str, int]) -> None:
        self.to = to
        self.captured: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.captured.append(data)
        assert self.transport is not None
        self.transport.sendto(data, self.to)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
async def test_reports_captured_before_a_restart_are_refused_after_it(fleet, how):
    lb = fleet.balancer(timeout_ms=2 * MINUTES)
    await ready(fleet, lb)
    loop = asyncio.get_running_loop()
    transport, relay = await loop.create_datagram_endpoint(
        lambda: CaptureRelay((HOST, lb.udp_port)), local_addr=(HOST, 0))
    try:
        victim = fleet.edge("victim", [(HOST, transport.get_extra_info("sockname")[1],
                                        lb.key)])
        # an edge reporting straight, seldom: after the restart it sends nothing new
        steady = fleet.edge("steady", [lb], interval_ms=MINUTES)

        async def both():
            return await has(fleet, lb, {victim.address, steady.address})
        await wait_until(both, what="both edges listed")
        victim.signal(signal.SIGTERM)  # its stopping report goes through the relay too
        assert victim.wait() == 0

        async def victim_gone():
            return await has(fleet, lb, {steady.address})
        await wait_until(victim_gone, what="stopped edge gone")
        captured = list(relay.captured)
        taken = lb.attribute("ReportsReceived")

        async def saved_since():  # the balancer saved after it took the last of them
            return (lb.attribute("StateFile")["upToDate"]
                    and lb.attribute("ReportsReceived") == taken)
        await wait_until(saved_since, what="a state file save after the last report")
        lb.signal(getattr(signal, how))
        lb.wait()
        again = fleet.balancer("lb", udp_port=lb.udp_port, http_port=lb.http_port,
                               mgmt_port=lb.mgmt_port, timeout_ms=2 * MINUTES)
        await ready(fleet, again)
        # warm: the pool is served from the first request, before any edge reports again
        assert await fleet.redirect(again) == steady.address
        state = again.attribute("StateFile")
        assert state["restoredServers"] == 1 and state["refused"] is None

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for datagram in captured:  # every one still inside the skew window
                sock.sendto(datagram, (HOST, again.udp_port))
        finally:
            sock.close()

        async def all_refused():
            return again.attribute("ReportsDropped")["replay"] == len(captured)
        await wait_until(all_refused, what="every captured report refused as a replay")
        assert again.attribute("ReportsReceived") == 0
        assert set(await fleet.servers(again)) == {steady.address}
    finally:
        transport.close()


async def test_a_keyless_flood_empties_nothing_and_costs_no_crypto(fleet):
    """The highest rate one local process sends (a Python socket: about 200 000 a second
    here), each datagram a key derivation's worth if opened, while real edges report."""
    lb = fleet.balancer()  # edges leave after 1 s of counted silence (5 reports missed)
    edges = [fleet.edge(f"e{i}", [lb]) for i in range(3)]
    await ready(fleet, lb)
    addresses = {e.address for e in edges}

    async def all_in():
        return await has(fleet, lb, addresses)
    await wait_until(all_in, what="three edges listed")
    rpc = Rpc(fleet.session, lb.mgmt_url)
    since = (await rpc.ok("pollNotifications", 0, 0))["next"]
    flooder = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lbmgmt.fleet.flood", HOST, str(lb.udp_port), "6",
        stdout=asyncio.subprocess.PIPE)
    answers: Counter[int] = Counter()
    try:
        while flooder.returncode is None:  # ask as clients do, all through the flood
            async with fleet.http.get(f"{lb.url}/loadbalancer") as r:
                answers[r.status] += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(flooder.wait(), 0.05)
        sent = int((await flooder.stdout.read()).decode() or 0)
    finally:
        if flooder.returncode is None:
            flooder.kill()
            await flooder.wait()
    assert sent > 10_000 and answers[200] > 0
    assert answers[503] == 0, f"no edge for {answers[503]} of {answers.total()} clients"
    left = await rpc.ok("pollNotifications", since, 0, ["lbmgmt.server.left"])
    assert left["notifications"] == []
    drops = await rpc.ok("getAttribute", "lbmgmt:type=Balancer", "ReportsDropped")
    # all from one host: after its burst, 5 a second were opened, the rest never reached
    # the crypto (those the balancer read at all: the kernel dropped what it could not)
    assert drops["bad-auth"] < 1000 and drops["throttled"] > 10_000
    assert await has(fleet, lb, addresses)


async def test_a_media_server_that_stops_listening_takes_its_edge_out_until_it_is_back(fleet):
    listeners = {name: Listener() for name in "ab"}  # (before the balancer: as above)
    lb = fleet.balancer()
    try:
        edges = {name: fleet.edge(name, [lb], monitor={"type": "tcp-connections",
                                                       "ports": [lis.port]})
                 for name, lis in listeners.items()}
        listeners["a"].connect(2)  # clients that stay connected when the listener goes
        await ready(fleet, lb)

        async def available(expected: dict[str, str]) -> bool:
            rows = await fleet.servers(lb)
            return {name: rows.get(e.address, {}).get("available")
                    for name, e in edges.items()} == expected
        await wait_until(lambda: available({"a": "true", "b": "true"}), what="both in")
        port = listeners["a"].port
        listeners["a"].server.close()  # the media server stops listening
        async def said_why() -> bool:
            row = (await fleet.servers(lb)).get(edges["a"].address, {})
            return (row.get("state") == "PAUSED"
                    and f"nothing listens on port {port}" in row.get("unhealthy", ""))
        await wait_until(lambda: available({"a": "false", "b": "true"}),
                         what="edge a out once nothing listens on its port")
        await wait_until(said_why, what="edge a saying nothing listens on its port")
        assert {await fleet.redirect(lb) for _ in range(10)} == {edges["b"].address}
        again = socket.create_server((HOST, port))  # back on the same port
        try:
            await wait_until(lambda: available({"a": "true", "b": "true"}),
                             what="edge a back once its port listens again")
        finally:
            again.close()
    finally:
        for lis in listeners.values():
            lis.close()
