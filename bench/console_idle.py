"""lb-console's CPU while it only watches: two connections refreshed every second.

    python -m bench.console_idle [--seconds 30] [--tab 1]

A balancer with three edges and one of those edges' own port run as real
processes; lb-console runs as a real process in a pseudo-terminal (132x40, as
an operator's terminal would be) attached to both at ``--interval 1``, and its
screen output is read and thrown away, as a terminal would. After a warm-up (20 s:
the load-trend sparklines take 16 refreshes to fill, then nothing moves in an idle
fleet), its CPU time (user + system, from /proc) is taken over ``--seconds``. The
baseline in the same run is a Python process that imports the console's
packages and sleeps: what the interpreter alone costs.

Target (issue 13): at most 2 % of one core.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path

from lbmgmt.fleet.ports import HOST
from lbmgmt.fleet.processes import ProcessFleet

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def in_pty(argv: list[str], rows: int = 40, cols: int = 132) -> tuple[int, int]:
    """Start ``argv`` on a new pseudo-terminal of that size: (pid, master fd)."""
    pid, master = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin/stdout/stderr
        os.environ["TERM"] = "xterm-256color"
        os.execv(argv[0], argv)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return pid, master


def drain(master: int, seconds: float) -> int:
    """Read the screen output for ``seconds`` (as a terminal does); bytes read."""
    total, end = 0, time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            try:
                total += len(os.read(master, 65536))
            except OSError:
                break
    return total


def measure(argv: list[str], warmup: float, seconds: float, key: bytes = b""
            ) -> dict[str, float]:
    pid, master = in_pty(argv)
    try:
        drain(master, warmup / 2)
        os.write(master, key)  # a number key: the tab watched
        drain(master, warmup / 2)
        start = cpu_seconds(pid)
        written = drain(master, seconds)
        used = cpu_seconds(pid) - start
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(master)
    return {"cpu_percent": round(100 * used / seconds, 2),
            "screen_bytes_per_s": round(written / seconds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=20.0,
                        help="seconds before measuring: the load-trend sparklines fill in 16")
    parser.add_argument("--tab", choices=["1", "2", "3", "4"], default="1",
                        help="the tab on screen: 1 Overview (the default), 2 MBeans, "
                             "3 Charts, 4 Notifications")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fleet = ProcessFleet(Path(tmp))
        try:
            lb = fleet.balancer()
            edges = [fleet.edge(f"e{i}", [lb], interval_ms=1000) for i in range(3)]
            time.sleep(2)  # the daemons up (a bench, not a test: no deadline to meet)
            console = [sys.executable, "-m", "tui.app", f"{HOST}:{lb.mgmt_port}",
                       f"{HOST}:{edges[0].mgmt_port}", "--interval", "1"]
            baseline = [sys.executable, "-c",
                        "import textual.app, tui.app, time; time.sleep(3600)"]
            result = {
                "baseline": measure(baseline, args.warmup, args.seconds),
                "console": measure(console, args.warmup, args.seconds, args.tab.encode()),
            }
        finally:
            fleet.cleanup()
    result["target_cpu_percent"] = 2.0
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
