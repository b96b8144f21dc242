"""Flash crowd with real processes: how evenly 5000 clients in one second spread.

    python -m bench.balance [--clients 5000] [--edges 20] [--sample-ms 100 0]

One balancer (then four), 20 real edge daemons whose load is the TCP
connections actually open on them (loopback listeners held by this script,
read by the edges' tcp-connections monitor). Each client asks
/loadbalancer, connects to the edge it got and stays. Prints max/mean and
min/mean connections per edge for every redirector; the baseline is a perfect
spread (1.00) and round-robin, which ignores load, in the same run. Each
``--sample-ms`` is a fleet of its own: the edges read their load that often
and report a move of max(1, 10 %) at once (0: only every 2.5 s, as before).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

from lbmgmt.fleet.ports import HOST
from lbmgmt.fleet.processes import BalancerProcess, ProcessFleet

# (label, redirector, grace ms): the grace window assumes clients take a while to connect;
# these loopback clients connect at once, so the same run shows it with grace 0 too.
REDIRECTORS = [("round-robin", "round-robin", 500),
               ("concurrent-connects", "concurrent-connects", 500),
               ("concurrent-connects g=0", "concurrent-connects", 0),
               ("p2c", "p2c", 500), ("p2c g=0", "p2c", 0)]


class Listeners:
    """Stand-in media servers: accept and hold every connection."""

    def __init__(self, count: int) -> None:
        self.servers: list[asyncio.Server] = []
        self.ports: list[int] = []
        self.held: list[asyncio.StreamWriter] = []
        self.count = count

    async def start(self) -> None:
        for _ in range(self.count):
            server = await asyncio.start_server(self._accept, HOST, 0, backlog=4096)
            self.servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.held.append(writer)


async def crowd(balancers: list[BalancerProcess], clients: int, window: float) -> Counter[str]:
    """Every client: ask a balancer (round-robin over them), connect to the edge, stay."""
    sockets: list[socket.socket] = []
    got: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int) -> None:
            await asyncio.sleep(i * window / clients)
            lb = balancers[i % len(balancers)]
            async with session.get(f"http://{HOST}:{lb.http_port}/loadbalancer") as resp:
                address = (await resp.text()).removeprefix("redirect=")
            host, port = address.rsplit(":", 1)
            s = socket.socket()
            s.setblocking(False)
            await loop.sock_connect(s, (host, int(port)))
            sockets.append(s)
            got[address] += 1
        await asyncio.gather(*(one(i) for i in range(clients)))
    crowd.sockets = sockets  # type: ignore[attr-defined]
    return got


async def run(n_balancers: int, edges: int, clients: int, workdir: Path, rounds: int,
              sample_ms: int, redirectors: list[tuple[str, str, int]]
              ) -> dict[str, list[tuple[float, float]]]:
    listeners = Listeners(edges)
    await listeners.start()
    procs = ProcessFleet(workdir, verbose=False)
    tag = f"{n_balancers}-{sample_ms}"
    lbs = [procs.balancer(f"lb{tag}-{i}", timeout_ms=10_000).wait_ready()
           for i in range(n_balancers)]
    fleet = [procs.edge(f"e{tag}-{i}", list(lbs), address=f"{HOST}:{port}",
                        monitor={"type": "tcp-connections", "ports": [port]},
                        config={"edge": {"load_sample_ms": sample_ms}})
             for i, port in enumerate(listeners.ports)]
    results: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in redirectors}
    try:
        # 20 Python processes starting on two cores: give them time
        await wait_for(lambda: all(lb.attribute("AvailableServerCount") == edges for lb in lbs),
                       90)
        for label, redirector, grace in redirectors * rounds:
            for lb in lbs:
                lb.rpc("setAttribute", "lbmgmt:type=Balancer", "Redirector", redirector)
                lb.rpc("setAttribute", "lbmgmt:type=Balancer", "Grace", grace)
            await asyncio.sleep(3.0)  # a full report interval with no connections: loads 0
            got = await crowd(lbs, clients, 1.0)
            loads = [got.get(f"{HOST}:{p}", 0) for p in listeners.ports]
            mean = sum(loads) / len(loads)
            results[label].append((max(loads) / mean, min(loads) / mean))
            for s in crowd.sockets:  # type: ignore[attr-defined]
                s.close()
            for writer in listeners.held:
                writer.close()
            listeners.held.clear()
    finally:
        for edge in fleet:
            edge.stop()
        for lb in lbs:
            lb.stop()
        for server in listeners.servers:
            server.close()
    return results


async def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("fleet did not come up")
        await asyncio.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--edges", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="crowds per redirector")
    parser.add_argument("--sample-ms", type=int, nargs="+", default=[100, 0])
    parser.add_argument("--redirectors", nargs="+", default=[label for label, _, _ in REDIRECTORS],
                        help="labels to run (default: all)")
    parser.add_argument("--balancers", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    chosen = [r for r in REDIRECTORS if r[0] in args.redirectors]
    table: dict[tuple[int, int], dict[str, list[tuple[float, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sample in args.sample_ms:
            for n in args.balancers:
                table[n, sample] = asyncio.run(run(n, args.edges, args.clients, Path(tmp),
                                                   args.rounds, sample, chosen))

    def cell(values: list[tuple[float, float]]) -> str:
        highs, lows = [v[0] for v in values], [v[1] for v in values]
        return f"{statistics.median(highs):.2f}/{statistics.median(lows):.2f}"
    print(f"(max/mean / min/mean, median of {args.rounds}; 1.00/1.00 = even)")
    for (n, sample), results in table.items():
        for name, values in results.items():
            print(f"{n} balancer(s), load sample {sample:>3} ms  {name:<24}{cell(values):>12}")
    print(json.dumps({"bench": "balance", "clients": args.clients, "edges": args.edges,
                      "rounds": args.rounds,
                      "median": {f"{n}lb/{sample}ms": {
                          k: [round(statistics.median(x[0] for x in v), 3),
                              round(statistics.median(x[1] for x in v), 3)]
                          for k, v in r.items()} for (n, sample), r in table.items()},
                      "all": {f"{n}lb/{sample}ms": {k: [[round(a, 3), round(b, 3)] for a, b in v]
                                                    for k, v in r.items()}
                              for (n, sample), r in table.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
