"""How long the balancer's loop is held while status pages are made, at 10 000 edges.

    python -m bench.stall [--seconds 5] [--edges 10000]

A balancer daemon runs in this process (uvloop), with ``--edges`` made-up edges
registered over its UDP port. A ticker in the same loop asks to run every
millisecond and records how late it ran: the longest lateness is the longest
time the loop was held (to within the ticker's own ~1 ms). A client process
(on the other core) fetches one page back to back meanwhile: nothing (the baseline),
``/loadbalancer?serverInfoXML`` from the client port, ``/metrics`` from the
management port. The edges never report again (timeout 10 min), so the pages
are made from the same pool each time; a page made from its cache is counted.

The figure a page's row must keep under is 10 ms (issue 11); the baseline row
shows what the machine does with no page at all.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time

import uvloop

from bench.reports import KEY, fake_reports
from lbmgmt.balancer.config import BalancerConfig, HttpConfig
from lbmgmt.balancer.daemon import BalancerDaemon
from lbmgmt.endpoints import Endpoint
from lbmgmt.fleet.ports import HOST
from lbmgmt.fleet.processes import pinned
from lbmgmt.management.config import ManagementConfig
from lbmgmt.status import SharedKey


# The client is another process: a thread here would take the GIL from the loop for
# as long as it parses a 4 MB answer, and that would be measured as the balancer's.
FETCHER = """
import http.client, sys, time
host, port, path, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
conn = http.client.HTTPConnection(host, port, timeout=60)
count, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    assert response.status == 200, (path, response.status)
    count += 1
print(count)
"""


async def measure(daemon: BalancerDaemon, page: str, seconds: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    targets = {"none": None,
               "serverInfoXML": (daemon.http_address, "/loadbalancer?serverInfoXML"),
               "metrics": (daemon.management.address if daemon.management else None,
                           "/metrics")}
    target = targets[page]
    fetcher = None
    if target is not None:
        address, path = target
        assert address is not None
        fetcher = await asyncio.create_subprocess_exec(
            *pinned(1), sys.executable, "-c", FETCHER, HOST, str(address[1]), path, str(seconds),
            stdout=asyncio.subprocess.PIPE)
    lateness: list[float] = []
    collections_before = sum(s["collections"] for s in gc.get_stats())
    full_before = gc.get_stats()[2]["collections"]
    end = loop.time() + seconds
    while loop.time() < end:
        due = loop.time() + 0.001
        await asyncio.sleep(0.001)
        lateness.append(loop.time() - due)
    fetched = 0
    if fetcher is not None:
        out, _ = await fetcher.communicate()
        fetched = int(out)
    lateness.sort()
    return {"page": page, "fetched": fetched,
            "p50_ms": round(lateness[len(lateness) // 2] * 1000, 2),
            "p99_ms": round(lateness[int(len(lateness) * 0.99)] * 1000, 2),
            "max_ms": round(lateness[-1] * 1000, 2),
            "gc_collections": sum(s["collections"] for s in gc.get_stats())
            - collections_before,
            "full_collections": gc.get_stats()[2]["collections"] - full_before}


async def main_async(args: argparse.Namespace) -> list[dict[str, object]]:
    config = BalancerConfig(key=SharedKey(KEY), listen=Endpoint(HOST, 0),
                            message_timeout_ms=600_000,
                            http=HttpConfig(listen=(Endpoint(HOST, 0),)),
                            management=ManagementConfig(Endpoint(HOST, 0)))
    daemon = BalancerDaemon(config)
    await daemon.start()
    gc.freeze()  # as ``lbmgmt balancer`` does once started
    try:
        assert daemon.udp_address is not None
        sender = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=daemon.udp_address)
        transport = sender[0]
        for i, datagram in enumerate(fake_reports(args.edges)):
            transport.sendto(datagram)
            if i % 200 == 199:
                await asyncio.sleep(0.005)  # (the kernel's buffer holds a few hundred)
        transport.close()
        deadline = time.monotonic() + 60
        while len(daemon.core.registry) < args.edges:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(daemon.core.registry)} of {args.edges} registered")
            await asyncio.sleep(0.05)
        return [await measure(daemon, page, args.seconds)
                for page in ("none", "serverInfoXML", "metrics", "none")]
    finally:
        await daemon.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--edges", type=int, default=10_000)
    args = parser.parse_args()
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})  # the balancer's loop on core 0, the client on core 1
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        rows = runner.run(main_async(args))
    print(f"{'page':<15}{'fetched':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'GCs':>6}"
          f"{'full':>6}")
    for row in rows:
        print(f"{row['page']:<15}{row['fetched']:>8}{row['p50_ms']:>8}{row['p99_ms']:>8}"
              f"{row['max_ms']:>8}{row['gc_collections']:>6}{row['full_collections']:>6}")
    print(json.dumps({"bench": "stall", "edges": args.edges, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
