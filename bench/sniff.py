"""What telling RTSP from HTTP costs the client port: the balancer with and without it.

    python -m bench.sniff [--rounds 3] [--seconds 4] [--before DIR]

With RTSP on the shared port (the default), a connection that does not open with
an RTMP byte is held until its first line is in and the line is searched for
" RTSP/"; ``[rtsp] enabled = false`` sniffs the first byte only. Both run in
turn, interleaved round by round (the machine is noisy), pinned to core 0 with
wrk on core 1, keep-alive and one request per connection; ``--before DIR`` adds
another checkout of lbmgmt (the tree before a change) as a third column. Prints
each column's median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.http import wrk
from lbmgmt.fleet.ports import HOST, free_port, wait_port
from lbmgmt.fleet.processes import pinned

KEY = "k-0123456789abcdef-bench"


def serve(workdir: Path, name: str, *, rtsp: bool,
          tree: str | None) -> tuple[subprocess.Popen[bytes], int]:
    port, udp = free_port(), free_port()
    config = workdir / f"{name}.toml"
    config.write_text(f'[balancer]\nlisten = "{HOST}:{udp}"\nkey = "{KEY}"\nstate_file = ""\n'
                      f'[http]\nlisten = "{HOST}:{port}"\n[management]\nenabled = false\n'
                      + ("" if rtsp else "[rtsp]\nenabled = false\n"))
    env = {**os.environ, **({"PYTHONPATH": tree} if tree else {})}
    proc = subprocess.Popen([*pinned(0), sys.executable, "-m", "lbmgmt", "balancer", "-c",
                             str(config)], env=env, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--before", help="another lbmgmt checkout, measured as a third column")
    args = parser.parse_args()
    columns = {"RTSP on": (True, None), "RTSP off": (False, None)}
    if args.before:
        columns = {"before": (True, args.before), **columns}
    rates: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, (rtsp, tree) in columns.items():
                proc, port = serve(Path(tmp), name.replace(" ", "-"), rtsp=rtsp, tree=tree)
                try:
                    for close in (False, True):
                        rate, _, _ = wrk(f"http://{HOST}:{port}/crossdomain.xml", args.seconds,
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
