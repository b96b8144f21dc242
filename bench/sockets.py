"""tcp-connections on a busy host: how long one load reading takes with 30 000 sockets.

    python -m bench.sockets [--sockets 30000] [--watched 100] [--runs 30]

Helper processes hold ``--sockets`` TCP sockets on loopback (connected pairs), the
"busy host"; the script listens on one more port with ``--watched`` connections, the
media server's. It then reads that port's load as the edge does, through sock_diag
with the kernel's port filter (today), and by parsing /proc/net/tcp{,6} (before, the
baseline) in the same run, and prints the median and max of each (issue 12: ≤ 20 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

from lbmgmt.edge.monitors import TcpConnectionsMonitor
from lbmgmt.fleet.ports import HOST

PER_HELPER = 7000  # connected pairs per helper process (two descriptors each)

HELPER = """
import socket, sys
pairs = int(sys.argv[1])
server = socket.create_server(("127.0.0.1", 0), backlog=4096)
port = server.getsockname()[1]
held = []
for _ in range(pairs):
    c = socket.create_connection(("127.0.0.1", port))
    held += [c, server.accept()[0]]
print("ready", flush=True)
sys.stdin.read()
"""


def timed(read, runs: int) -> tuple[float, float, int]:
    times, value = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        value = read()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=30_000)
    parser.add_argument("--watched", type=int, default=100)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    helpers = []
    pairs = args.sockets // 2
    try:
        while pairs > 0:
            n = min(PER_HELPER, pairs)
            proc = subprocess.Popen([sys.executable, "-c", HELPER, str(n)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a helper could not open its sockets (ulimit -n?)")
            helpers.append(proc)
            pairs -= n
        server = socket.create_server((HOST, 0), backlog=1024)
        port = server.getsockname()[1]
        held = []
        for _ in range(args.watched):
            held.append(socket.create_connection((HOST, port)))
            held.append(server.accept()[0])
        with open("/proc/net/tcp") as f:
            rows = sum(1 for _ in f) - 1
        netlink = TcpConnectionsMonitor([port])
        proc_scan = TcpConnectionsMonitor([port], proc_files=TcpConnectionsMonitor.PROC_FILES)
        new = timed(netlink.count, args.runs)
        old = timed(proc_scan.count, args.runs)
        assert new[2] == old[2] == args.watched, (new, old)
        print(f"host TCP sockets (/proc/net/tcp rows): {rows}; watched port: {args.watched}")
        print(f"sock_diag, port filter (today)   median {new[0]:6.2f} ms   max {new[1]:6.2f} ms")
        print(f"/proc/net/tcp scan (baseline)    median {old[0]:6.2f} ms   max {old[1]:6.2f} ms")
        print(json.dumps({"bench": "sockets", "host_sockets": rows, "watched": args.watched,
                          "sock_diag_ms": {"median": round(new[0], 2), "max": round(new[1], 2)},
                          "proc_ms": {"median": round(old[0], 2), "max": round(old[1], 2)},
                          "pid": os.getpid()}))
    finally:
        for proc in helpers:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
