"""How fast an edge leaves the redirects: pause, stop (SIGTERM) and SIGKILL.

    python -m bench.react [--rounds 3]

A real balancer and three real edges (default 2.5 s reports, 5 s timeout);
the lightest edge is the one every client gets. From the event, /loadbalancer
is asked over one keep-alive connection as fast as it answers, until an
answer no longer names that edge. Baseline in the same run: the report
interval, which is what an edge that did not report at once would cost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.procs import HOST, Balancer, Edge


def time_until_gone(lb: Balancer, address: str, act, limit: float = 15.0) -> float:
    conn = http.client.HTTPConnection(HOST, lb.http_port, timeout=5)
    start = time.perf_counter()
    act()
    while True:
        conn.request("GET", "/loadbalancer")
        body = conn.getresponse().read().decode()
        if body != f"redirect={address}":
            conn.close()
            return time.perf_counter() - start
        if time.perf_counter() - start > limit:
            raise RuntimeError(f"{address} still chosen after {limit} s")


def wait_chosen(lb: Balancer, address: str, timeout: float = 60.0) -> None:
    conn = http.client.HTTPConnection(HOST, lb.http_port, timeout=5)
    deadline = time.monotonic() + timeout
    while True:
        conn.request("GET", "/loadbalancer")
        if conn.getresponse().read().decode() == f"redirect={address}":
            conn.close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{address} never chosen")
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"pause": [], "stop": [], "kill": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lb = Balancer(work, timeout_ms=5000).start()
        heavy = [Edge(work, f"heavy{i}", [lb], f"heavy{i}.example:1935",
                      # every poll below is a redirect, counted on the light edge: keep the
                      # heavy ones heavier than any number of polls can make it
                      monitor='[monitor]\ntype = "manual"\nload = 1e9').start() for i in range(2)]
        try:
            for _ in range(args.rounds):
                for event in ("pause", "stop", "kill"):
                    light = Edge(work, "light", [lb], "light.example:1935").start()
                    wait_chosen(lb, light.address)
                    if event == "pause":
                        def act(edge: Edge = light) -> None:
                            import urllib.request
                            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "invoke",
                                               "params": ["lbmgmt:type=Sender", "pause", []]})
                            urllib.request.urlopen(urllib.request.Request(
                                f"http://{HOST}:{edge.mgmt_port}/jsonrpc", body.encode(),
                                {"Content-Type": "application/json"}), timeout=5).read()
                    else:
                        sig = signal.SIGTERM if event == "stop" else signal.SIGKILL

                        def act(edge: Edge = light, sig: int = sig) -> None:
                            assert edge.proc is not None
                            edge.proc.send_signal(sig)
                    results[event].append(time_until_gone(lb, light.address, act))
                    light.stop()
                    time.sleep(0.2)
                    if event == "kill":  # let the balancer forget it before the next round
                        time.sleep(5.5)
        finally:
            for edge in heavy:
                edge.stop()
            lb.stop()
    interval = 2.5
    print(f"{'event':<8}{'median ms':>10}{'max ms':>9}{'vs next report (2.5 s)':>24}")
    for event, times in results.items():
        med, top = statistics.median(times) * 1000, max(times) * 1000
        print(f"{event:<8}{med:>10.1f}{top:>9.1f}{med / 1000 / interval:>24.3f}")
    print(json.dumps({"bench": "react", "rounds": args.rounds, "interval_s": interval,
                      "median_ms": {k: round(statistics.median(v) * 1000, 1)
                                    for k, v in results.items()},
                      "max_ms": {k: round(max(v) * 1000, 1) for k, v in results.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
