"""Start-up: ``lbmgmt --help``, a subcommand's help, and daemons until they are of use.

    python -m bench.startup [--rounds 15] [--before DIR] [--tree NAME=DIR]

Each case is a fresh process, timed from before its exec to: its exit (``--help``),
the first report an edge sends (a manual monitor; a UDP socket here takes the report
and opens it with ReportReceiver, as a balancer would), or a balancer's client port
answering a GET (both daemons with their management port on, as they run by default;
both stretch their shared key with scrypt first, by design). The baseline
in the same run is ``python -c pass``: the interpreter alone. Cases run interleaved
round by round, each round from another case (the machine is shared and noisy);
each cell is the median of ``--rounds`` and the best. ``--before DIR`` adds another
checkout of lbmgmt (``git archive HEAD | tar -x -C DIR``) as rows, run through the
same console script with ``PYTHONPATH=DIR`` (``--tree NAME=DIR`` more of them).

Targets (issue 17): ``lbmgmt --help`` within 0.15 s, an edge reporting within
0.4 s, each on its median. A goal, not a test: tests/unit/test_startup.py checks
the structure (what ``--help`` does not import), never a time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lbmgmt.fleet.ports import HOST, free_port
from lbmgmt.status import ReportAccepted, ReportReceiver, SharedKey

KEY = "k-0123456789abcdef-startup-bench"
TREE = Path(__file__).resolve().parents[1]  # the checkout this bench is in
SCRIPT = str(Path(sys.executable).with_name("lbmgmt"))  # the console script, as typed
DEADLINE = 30.0  # a hang guard, never a bound on what is measured
TARGETS = {"lbmgmt --help": 0.15, "edge: first report": 0.4}
HELPS = {"lbmgmt --help": ["--help"], "lbmgmt edge --help": ["edge", "--help"],
         "lbmgmt get --help": ["get", "--help"]}


def env_for(tree: Path) -> dict[str, str]:
    # PYTHONPATH comes before site-packages' editable finder: this tree's lbmgmt is run.
    return {**os.environ, "PYTHONPATH": str(tree)}


def timed_exit(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    # No timeout to wait(): with one, Popen.wait polls, sleeping up to 50 ms at a time.
    guard = threading.Timer(DEADLINE, proc.kill)
    guard.start()
    try:
        code = proc.wait()
    finally:
        guard.cancel()
    elapsed = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {code}")
    return elapsed


def timed_edge(tree: Path, workdir: Path) -> float:
    """From exec to the edge's first report received (and opened) on a UDP socket."""
    receiver = ReportReceiver(SharedKey(KEY))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(DEADLINE)
        (workdir / "targets.txt").write_text(f"{HOST},{sock.getsockname()[1]},{KEY}\n")
        config = workdir / "edge.toml"
        config.write_text(f'[edge]\nredirect_address = "{HOST}:1935"\n'
                          'guid_file = "edge.guid"\n[monitor]\ntype = "manual"\n'
                          f'[management]\nlisten = "{HOST}:{free_port()}"\n')
        start = time.perf_counter()
        proc = subprocess.Popen([SCRIPT, "edge", "-c", str(config)], env=env_for(tree),
                                stdin=subprocess.DEVNULL)
        try:
            data = sock.recv(2048)
            elapsed = time.perf_counter() - start
            event = receiver.receive(data, time.time())
            if not isinstance(event, ReportAccepted):
                raise RuntimeError(f"the edge's first datagram was dropped: {event}")
        finally:
            proc.terminate()
            proc.wait(DEADLINE)
    return elapsed


def timed_balancer(tree: Path, workdir: Path) -> float:
    """From exec to the client port answering a GET (a 200 for /crossdomain.xml)."""
    port = free_port()
    config = workdir / "balancer.toml"
    config.write_text(f'[balancer]\nlisten = "{HOST}:{free_port(socket.SOCK_DGRAM)}"\n'
                      f'key = "{KEY}"\nstate_file = ""\n[http]\nlisten = "{HOST}:{port}"\n'
                      f'[management]\nlisten = "{HOST}:{free_port()}"\n')
    request = f"GET /crossdomain.xml HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    start = time.perf_counter()
    proc = subprocess.Popen([SCRIPT, "balancer", "-c", str(config)], env=env_for(tree),
                            stdin=subprocess.DEVNULL)
    try:
        while True:
            try:
                with socket.create_connection((HOST, port), timeout=DEADLINE) as conn:
                    conn.sendall(request)
                    head = conn.recv(64)
                    break
            except ConnectionRefusedError:
                if time.perf_counter() - start > DEADLINE or proc.poll() is not None:
                    raise
                time.sleep(0.002)
        elapsed = time.perf_counter() - start
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"the balancer answered {head!r}")
    finally:
        proc.terminate()
        proc.wait(DEADLINE)
    return elapsed


def cases(trees: dict[str, Path], workdir: Path) -> dict[str, Callable[[], float]]:
    out: dict[str, Callable[[], float]] = {
        "python -c pass": lambda: timed_exit([sys.executable, "-c", "pass"], dict(os.environ))}
    for label, tree in trees.items():
        suffix = "" if label == "now" else f" ({label})"
        for name, args in HELPS.items():
            out[name + suffix] = (lambda t=tree, a=args:
                                  timed_exit([SCRIPT, *a], env_for(t)))
        out["edge: first report" + suffix] = lambda t=tree: timed_edge(t, workdir)
        out["balancer: client port answers" + suffix] = (lambda t=tree:
                                                         timed_balancer(t, workdir))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--before", metavar="DIR",
                        help="another lbmgmt checkout, measured as more rows")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR",
                        help="more checkouts, each measured as rows named NAME")
    args = parser.parse_args()
    trees = {"now": TREE}
    if args.before:
        trees["before"] = Path(args.before).resolve()
    for given in args.tree:
        name, _, where = given.partition("=")
        trees[name] = Path(where).resolve()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = cases(trees, Path(tmp))
        names = list(run)
        for name in names:  # once first, to warm the page cache and .pyc files: not counted
            run[name]()
        for round_number in range(args.rounds):
            # each round starts from another case: no case always runs first or last
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                times.setdefault(name, []).append(run[name]())
    base = statistics.median(times["python -c pass"])
    print(f"| case (median of {args.rounds}) | median s | best s | × baseline | target |")
    print("|---|---:|---:|---:|---|")
    result: dict[str, object] = {"bench": "startup", "rounds": args.rounds}
    for name, values in times.items():
        median, best = statistics.median(values), min(values)
        target = TARGETS.get(name.split(" (")[0])  # (the other trees' rows too)
        met = target is not None and median <= target
        mark = "" if target is None else f"≤ {target:g} s: {'met' if met else 'missed'}"
        print(f"| {name} | {median:.3f} | {best:.3f} | {median / base:.1f} | {mark} |")
        result[name] = {"median_s": round(median, 4), "best_s": round(best, 4),
                        "ratio": round(median / base, 2),
                        **({"target_s": target, "met": met} if target else {})}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
