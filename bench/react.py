"""How fast the fleet reacts: an edge joining, pausing, stopping, killed; a balancer
restarting; a management long poll waking.

    python -m bench.react [--rounds 3]

A real balancer and real edges at the defaults (2.5 s reports, 5 s timeout); the
lightest edge is the one every client gets. From the event, /loadbalancer is
asked over one keep-alive connection as fast as it answers, until the answer
changes. join: from the new edge's GUID file (written just before its first
report) until it is chosen. restart: from the restarted balancer answering HTTP
until every edge is back. notify: from a setAttribute call until a parked
pollNotifications answers. Baseline in the same run: the report interval, which
is what an edge that did not report at once would cost. These are the latency
promises the tests check only as "eventually" (tests never time real processes).
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from lbmgmt.fleet.ports import HOST
from lbmgmt.fleet.processes import BalancerProcess, EdgeProcess, ProcessFleet


def time_until_gone(lb: BalancerProcess, address: str, act, limit: float = 15.0) -> float:
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


def wait_chosen(lb: BalancerProcess, address: str, timeout: float = 60.0,
                poll: float = 0.05) -> None:
    conn = http.client.HTTPConnection(HOST, lb.http_port, timeout=5)
    deadline = time.monotonic() + timeout
    while True:
        conn.request("GET", "/loadbalancer")
        if conn.getresponse().read().decode() == f"redirect={address}":
            conn.close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{address} never chosen")
        time.sleep(poll)


def wait_until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("condition not reached")
        time.sleep(0.001)


def time_join(lb: BalancerProcess, procs: ProcessFleet, name: str) -> tuple[EdgeProcess, float]:
    edge = procs.edge(name, [lb], address=f"{name}.example:1935")
    wait_until(edge.guid_file.exists)
    start = time.perf_counter()
    wait_chosen(lb, edge.address, poll=0.0)
    return edge, time.perf_counter() - start


def time_restart(lb: BalancerProcess, procs: ProcessFleet, edges: int) -> tuple[
        BalancerProcess, float]:
    lb.stop()
    again = procs.balancer("lb-again", udp_port=lb.udp_port, http_port=lb.http_port,
                           timeout_ms=5000)
    again.wait_ready()
    start = time.perf_counter()
    wait_until(lambda: again.attribute("ServerCount") == edges)
    return again, time.perf_counter() - start


def time_notify(lb: BalancerProcess) -> float:
    answered: list[float] = []

    def poll() -> None:
        lb.rpc("pollNotifications", None, 30)
        answered.append(time.perf_counter())
    thread = threading.Thread(target=poll)
    thread.start()
    wait_until(lambda: lb.rpc("getAttribute", "lbmgmt:type=Management", "ParkedPolls") == 1)
    start = time.perf_counter()
    lb.rpc("setAttribute", "lbmgmt:type=Balancer", "Grace", 500)
    thread.join(30)
    return answered[0] - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"join": [], "pause": [], "stop": [], "kill": [],
                                       "restart": [], "notify": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        procs = ProcessFleet(work, verbose=False)
        lb = procs.balancer(timeout_ms=5000).wait_ready()
        heavy = [procs.edge(f"heavy{i}", [lb], address=f"heavy{i}.example:1935",
                      # every poll below is a redirect, counted on the light edge: keep the
                      # heavy ones heavier than any number of polls can make it
                           monitor={"type": "manual", "load": 1e9}) for i in range(2)]
        try:
            for _ in range(args.rounds):
                for event in ("pause", "stop", "kill"):
                    light, joined = time_join(lb, procs, "light")
                    results["join"].append(joined)
                    if event == "pause":
                        def act(edge: EdgeProcess = light) -> None:
                            import urllib.request
                            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "invoke",
                                               "params": ["lbmgmt:type=Sender", "pause", []]})
                            urllib.request.urlopen(urllib.request.Request(
                                f"http://{HOST}:{edge.mgmt_port}/jsonrpc", body.encode(),
                                {"Content-Type": "application/json"}), timeout=5).read()
                    else:
                        sig = signal.SIGTERM if event == "stop" else signal.SIGKILL

                        def act(edge: EdgeProcess = light, sig: int = sig) -> None:
                            edge.signal(sig)
                    results[event].append(time_until_gone(lb, light.address, act))
                    light.stop()
                    time.sleep(0.2)
                    if event == "kill":  # let the balancer forget it before the next round
                        time.sleep(5.5)
                lb, took = time_restart(lb, procs, len(heavy))
                results["restart"].append(took)
                results["notify"].append(time_notify(lb))
        finally:
            for edge in heavy:
                edge.stop()
            lb.stop()
    interval = 2.5
    print(f"{'event':<9}{'median ms':>10}{'max ms':>9}{'vs next report (2.5 s)':>24}")
    for event, times in results.items():
        med, top = statistics.median(times) * 1000, max(times) * 1000
        print(f"{event:<9}{med:>10.1f}{top:>9.1f}{med / 1000 / interval:>24.3f}")
    print(json.dumps({"bench": "react", "rounds": args.rounds, "interval_s": interval,
                      "median_ms": {k: round(statistics.median(v) * 1000, 1)
                                    for k, v in results.items()},
                      "max_ms": {k: round(max(v) * 1000, 1) for k, v in results.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
