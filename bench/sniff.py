"""What the client port's features cost: the balancer with and without them.

    python -m bench.sniff [--rounds 3] [--seconds 4] [--before DIR] [--path P] [--edges N]

With RTSP on the shared port (the default), a connection that does not open with
an RTMP byte is held until its first line is in and the line is searched for
" RTSP/"; ``[rtsp] enabled = false`` sniffs the first byte only. "routing on"
adds ``[routing]`` (a CIDR rule every client matches, a trusted proxy, private
networks: a lookup per request, cached per client). Each runs in turn,
interleaved round by round (the machine is noisy), pinned to core 0 with wrk on
core 1, keep-alive and one request per connection; ``--before DIR`` adds another
checkout of lbmgmt (the tree before a change) as a column. ``--path`` is what
wrk asks (``/crossdomain.xml``; ``/loadbalancer`` with ``--edges``, made-up edges
reported to each balancer). Prints each column's median.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.http import wrk
from bench.reports import fake_reports, send_all
from lbmgmt.fleet.ports import HOST, free_port, wait_port
from lbmgmt.fleet.processes import pinned

KEY = "k-0123456789abcdef-bench"


ROUTING = ('[routing]\ntrusted_proxies = ["10.255.0.1/32"]\nprivate_networks = ["10.0.0.0/8"]\n'
           '[[routing.rules]]\nnetworks = ["127.0.0.0/8"]\ngroups = ["nearby"]\n')


def serve(workdir: Path, name: str, *, rtsp: bool, tree: str | None, routing: bool,
          edges: int) -> tuple[subprocess.Popen[bytes], int]:
    port, udp = free_port(), free_port(socket.SOCK_DGRAM)
    config = workdir / f"{name}.toml"
    config.write_text(f'[balancer]\nlisten = "{HOST}:{udp}"\nkey = "{KEY}"\nstate_file = ""\n'
                      'message_timeout_ms = 600000\n'
                      f'[http]\nlisten = "{HOST}:{port}"\n[management]\nenabled = false\n'
                      + ("" if rtsp else "[rtsp]\nenabled = false\n")
                      + (ROUTING if routing else ""))
    env = {**os.environ, **({"PYTHONPATH": tree} if tree else {})}
    proc = subprocess.Popen([*pinned(0), sys.executable, "-m", "lbmgmt", "balancer", "-c",
                             str(config)], env=env, stderr=subprocess.DEVNULL)
    wait_port(port)
    if edges:
        send_all(udp, fake_reports(edges, key=KEY), pace=20_000)
        deadline = time.monotonic() + 30
        while True:  # until the balancer answers with an edge
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/loadbalancer") as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the edges were not registered")
            time.sleep(0.1)
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--before", help="another lbmgmt checkout, measured as a column")
    parser.add_argument("--path", default="/crossdomain.xml")
    parser.add_argument("--edges", type=int, default=0, help="made-up edges to report")
    args = parser.parse_args()
    columns = {"RTSP on": (True, None, False), "RTSP off": (False, None, False),
               "routing on": (True, None, True)}
    if args.before:
        columns = {"before": (True, args.before, False), **columns}
    rates: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        names = list(columns)
        for round_number in range(args.rounds):
            # each round starts from another column: no column always runs first or last
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                rtsp, tree, routing = columns[name]
                proc, port = serve(Path(tmp), name.replace(" ", "-"), rtsp=rtsp, tree=tree,
                                   routing=routing, edges=args.edges)
                try:
                    for close in (False, True):
                        rate, _, _ = wrk(f"http://{HOST}:{port}{args.path}", args.seconds,
                                         args.connections, close)
                        rates.setdefault((name, close), []).append(rate)
                finally:
                    proc.terminate()
                    proc.wait(30)
    print(f"| mode | {' | '.join(columns)} |")
    print(f"|---|{'---:|' * len(columns)}")
    for close, mode in ((False, "keep-alive"), (True, "one request per connection")):
        cells = " | ".join(f"{statistics.median(rates[(name, close)]):,.0f}".replace(",", " ")
                           for name in columns)
        print(f"| {mode}, req/s (median of {args.rounds}) | {cells} |")


if __name__ == "__main__":
    main()
