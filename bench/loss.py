"""Report loss: how much of the time an edge that reports all along is out of the pool.

    python -m bench.loss [--edges 40] [--seconds 60] [--interval-ms 100]

Real edge and balancer daemons (in one process, on loopback), with a loss-injecting UDP
relay between them: every edge reports to two relays, and each relay drops a report with
the given probability (independently) before passing it to its own balancer. One balancer
runs today's rule (an edge leaves after 4 of its own intervals missed, plus half an
interval); the other the seed's (out after two intervals of silence), as the baseline in
the same run. Intervals are short (100 ms) so that a minute holds as many reports as
four hours at the default 2.5 s; the rule scales with the interval.

Targets (issue 12): at 10 % loss an edge is wrongly out at most 0.1 % of the time, at
30 % at most 1 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from pathlib import Path

from lbmgmt.balancer.config import BalancerConfig, HttpConfig
from lbmgmt.balancer.daemon import BalancerDaemon
from lbmgmt.balancer.registry import ServerJoined, ServerLeft
from lbmgmt.edge.config import EdgeConfig
from lbmgmt.edge.daemon import EdgeDaemon
from lbmgmt.edge.monitors import ManualMonitor
from lbmgmt.edge.targets import ReportTarget
from lbmgmt.endpoints import Endpoint
from lbmgmt.fleet.ports import HOST
from lbmgmt.status import SharedKey

KEY = SharedKey("bench-loss")


class DroppingRelay(asyncio.DatagramProtocol):
    """Forwards each datagram to ``to`` unless a coin says it is lost."""

    def __init__(self, to: tuple[str, int], loss: float, rng: random.Random) -> None:
        self.to, self.loss, self.rng = to, loss, rng
        self.transport: asyncio.DatagramTransport | None = None
        self.passed = self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        self.passed += 1
        assert self.transport is not None
        self.transport.sendto(data, self.to)


class Absence:
    """Out-of-pool time per balancer, from its registry's own events."""

    def __init__(self, balancer: BalancerDaemon) -> None:
        self.balancer = balancer
        self.left_at: dict[object, float] = {}
        self.absent = 0.0
        self.leaves = 0
        self.counting = False
        balancer.core.listeners.append(self.heard)

    def _now(self) -> float:
        return self.balancer.clocks.monotonic()

    def heard(self, event: object) -> None:
        if not self.counting:
            return
        if isinstance(event, ServerLeft):
            self.left_at[event.server.guid] = self._now()
            self.leaves += 1
        elif isinstance(event, ServerJoined) and event.server.guid in self.left_at:
            self.absent += self._now() - self.left_at.pop(event.server.guid)

    def start(self) -> None:
        self.counting = True

    def stop(self) -> None:
        now = self._now()
        self.absent += sum(now - at for at in self.left_at.values())
        self.left_at.clear()
        self.counting = False


def balancer_config(rule: str, interval_ms: int) -> BalancerConfig:
    config = BalancerConfig(key=KEY, listen=Endpoint(HOST, 0),
                            http=HttpConfig(listen=(Endpoint(HOST, 0),)))
    if rule == "seed":  # out after two intervals of silence
        config.message_timeout_ms = config.max_silence_ms = 2 * interval_ms
    else:  # today's: 4 misses of the edge's own interval (the floor set out of the way)
        config.message_timeout_ms = interval_ms
    return config


async def run_level(loss: float, edges: int, seconds: float, interval_ms: int,
                    workdir: Path, seed: int) -> dict[str, dict[str, float]]:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    rules = ("by-interval", "seed")
    balancers = {rule: BalancerDaemon(balancer_config(rule, interval_ms)) for rule in rules}
    for balancer in balancers.values():
        await balancer.start()
    absences = {rule: Absence(b) for rule, b in balancers.items()}
    relays: dict[str, DroppingRelay] = {}
    transports = []
    for rule, balancer in balancers.items():
        assert balancer.udp_address is not None
        transport, relay = await loop.create_datagram_endpoint(
            lambda b=balancer: DroppingRelay(b.udp_address, loss, rng),  # type: ignore[misc]
            local_addr=(HOST, 0))
        relays[rule] = relay
        transports.append(transport)
    targets = [ReportTarget(HOST, t.get_extra_info("sockname")[1], KEY, i + 1)
               for i, t in enumerate(transports)]
    daemons = []
    try:
        for i in range(edges):
            edge = EdgeDaemon(EdgeConfig(
                redirect_address=f"edge{i}.example:1935",
                targets_file=workdir / f"e{i}.targets", guid_file=workdir / f"e{i}.guid",
                message_interval_ms=interval_ms, monitor=ManualMonitor(0), management=None),
                targets=targets)
            await edge.start()
            daemons.append(edge)
        # every edge in both pools before the count starts
        for _ in range(int(30 / 0.05)):
            if all(len(b.core.registry) == edges for b in balancers.values()):
                break
            await asyncio.sleep(0.05)
        for absence in absences.values():
            absence.start()
        await asyncio.sleep(seconds)
        for absence in absences.values():
            absence.stop()
    finally:
        for edge in daemons:
            await edge.stop()
        for transport in transports:
            transport.close()
        for balancer in balancers.values():
            await balancer.stop()
    return {rule: {"absent_fraction": a.absent / (edges * seconds), "leaves": a.leaves,
                   "dropped": relays[rule].dropped, "passed": relays[rule].passed}
            for rule, a in absences.items()}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n, loss in enumerate(args.loss):
            results[f"{loss:.0%}"] = await run_level(loss, args.edges, args.seconds,
                                                     args.interval_ms, Path(tmp), seed=n + 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval-ms", type=int, default=100)
    parser.add_argument("--loss", type=float, nargs="+", default=[0.10, 0.30])
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(main_async(args))
    for level, rules in results.items():
        for rule, r in rules.items():  # type: ignore[attr-defined]
            print(f"loss {level:>4}  {rule:<12} out of the pool {r['absent_fraction']:.4%} "
                  f"of edge-time, {r['leaves']} leaves "
                  f"({r['dropped']} of {r['dropped'] + r['passed']} reports dropped)")
    json.dump(results, sys.stdout)
    print()


if __name__ == "__main__":
    main()
