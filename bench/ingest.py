"""Report ingestion: authenticated reports/s one balancer takes, and loss under HTTP load.

    python -m bench.ingest [--reports 100000]

1. Throughput: a separate sender process (core 1) sends pre-sealed reports
   from 10 000 edges at a sustained --pace (default 150 000/s, above what one
   process takes) for --seconds; the balancer (core 0) counts what it
   authenticates and takes, divided by the time until it stops taking.
   Baseline in the same run: a bare Python UDP receiver (no crypto, no
   registry) fed the same stream.
2. Loss: 4 000 reports/s (10 000 edges every 2.5 s) for 5 s while wrk
   saturates /loadbalancer; loss = 1 - reports taken / reports sent.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.http import ensure_wrk
from bench.reports import KEY, send_all
from lbmgmt.fleet.ports import HOST, free_port
from lbmgmt.fleet.processes import ProcessFleet, pinned
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey

RECEIVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.settimeout(1.0)
count = 0
try:
    while True:
        s.recv(2048)
        count += 1
except socket.timeout:
    pass
print(count, flush=True)
"""


def sealed(edges: int, per_edge: int) -> list[bytes]:
    """Interleaved so consecutive datagrams come from different edges, as in a fleet."""
    key = SharedKey(KEY)
    now = time.time()
    sealers = [ReportSealer(uuid.uuid4()) for _ in range(edges)]
    out = []
    for _ in range(per_edge):
        for i, sealer in enumerate(sealers):
            out.append(sealer.seal(Report(EdgeState.RUNNING, f"10.1.{i >> 8}.{i & 255}:1935",
                                          1.0, 2500), key, now=now))
    return out


def _blast(port: int, datagrams: list[bytes], pace: float | None) -> None:
    send_all(port, datagrams, pace=pace)


def blast(port: int, datagrams: list[bytes], pace: float | None = None) -> float:
    """Send from another process (pinned to core 1); seconds it took."""
    start = time.perf_counter()
    proc = multiprocessing.get_context("fork").Process(target=_blast,
                                                       args=(port, datagrams, pace))
    proc.start()
    proc.join()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pace", type=int, default=150_000, help="datagrams/s sent")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    edges = 10_000
    data = sealed(edges, max(1, int(args.pace * args.seconds) // edges))
    with tempfile.TemporaryDirectory() as tmp:
        # baseline: a bare receiver on core 0
        port = free_port(socket.SOCK_DGRAM)
        receiver = subprocess.Popen([*pinned(0), sys.executable, "-c", RECEIVER, str(port)],
                                    stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        raw_seconds = blast(port, data, pace=args.pace)
        raw_count = int(receiver.communicate(timeout=30)[0])
        raw_rate = raw_count / raw_seconds

        lb = ProcessFleet(Path(tmp), verbose=False).balancer(
            timeout_ms=600_000, cpu=0).wait_ready()
        try:
            before = lb.attribute("ReportsReceived")
            seconds = blast(lb.udp_port, data, pace=args.pace)
            # count the socket buffer's drain too, and its time: until taking stops
            taken, last = lb.attribute("ReportsReceived"), time.perf_counter()
            drained_at = last
            while True:
                time.sleep(0.1)
                now_taken = lb.attribute("ReportsReceived")
                if now_taken == taken:
                    break
                taken, drained_at = now_taken, time.perf_counter()
            taken = taken - before  # type: ignore[operator]
            rate = taken / (seconds + (drained_at - last))
            drops = lb.attribute("ReportsDropped")

            # loss at 4 000/s while /loadbalancer is saturated
            paced = sealed(edges, 2)  # 20 000 reports: 5 s at 4 000/s
            wrk = subprocess.Popen([*pinned(1), ensure_wrk(), "-t1", "-c32", "-d7s",
                                    f"http://{HOST}:{lb.http_port}/loadbalancer"],
                                   stdout=subprocess.PIPE, text=True)
            time.sleep(0.5)
            before = lb.attribute("ReportsReceived")
            blast(lb.udp_port, paced, pace=4000)
            time.sleep(1.0)
            under_load = lb.attribute("ReportsReceived") - before  # type: ignore[operator]
            wrk_out = wrk.communicate(timeout=30)[0]
        finally:
            lb.stop()
    loss = 1 - under_load / len(paced)
    rps_line = next((line for line in wrk_out.splitlines() if "Requests/sec" in line), "")
    print(f"{'receiver':<34}{'reports/s':>10}{'vs bare':>9}")
    print(f"{'bare UDP receiver (baseline)':<34}{raw_rate:>10.0f}{1.0:>9.2f}")
    print(f"{'balancer (authenticated, taken)':<34}{rate:>10.0f}{rate / raw_rate:>9.2f}")
    print(f"sent {len(data)} in {seconds:.2f} s ({args.pace}/s); taken {taken}, the rest lost "
          f"in the kernel's socket buffer; dropped by reason {drops}")
    print(f"at 4000 reports/s with /loadbalancer saturated ({rps_line.strip()}): "
          f"sent {len(paced)}, taken {under_load}, loss {loss:.2%}")
    print(json.dumps({"bench": "ingest", "sent": len(data), "taken": taken,
                      "reports_per_s": round(rate), "bare_per_s": round(raw_rate),
                      "ratio": round(rate / raw_rate, 3), "paced_sent": len(paced),
                      "paced_taken": under_load, "loss": round(loss, 5)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
