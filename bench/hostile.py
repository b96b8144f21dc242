"""The client port under attack: what one hostile client costs everyone else.

    python -m bench.hostile [--seconds 8] [--edges 50]

A real balancer process (pinned to core 0, a proxy application configured) with
``--edges`` made-up edges that report every second (timeout 2.5 s, so an edge
whose reports go unread for 2.5 s leaves the pool). For each attack, and once
with none, a prober on core 1 asks ``/loadbalancer`` 100 times a second on one
keep-alive connection; the figures are its p50/p99/max latency, the fewest
edges the balancer listed during the run (a lost report shows as an edge gone),
the balancer's RSS growth, and whether a real RTMP client (``lbmgmt resolve``)
still got its redirect while the attack ran. Attackers connect from 127.0.0.2,
the prober and the real client from 127.0.0.1.

Attacks (docs/performance.md gives the figures of the issue that asked for them):
- ``rtmp-flood``: one RTMP connection, handshake done, then audio messages in
  128-byte chunks as fast as the socket takes them, never a connect (a proxy
  application is configured, so before its budget every byte was kept);
- ``rtmp-trickle``: 1000 connections that finish the handshake and then send one
  byte a second;
- ``http-slowloris``: 300 connections sending one header byte a second;
- ``server-info``: ``?serverInfoXML`` fetched back to back with 10 000 edges
  listed (the edges for this one are 10 000, reported once, timeout 10 min).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.reports import FakeEdges, fake_reports, send_all
from lbmgmt.fleet.ports import HOST, wait_port
from lbmgmt.fleet.processes import BalancerProcess, ProcessFleet
from lbmgmt.rtmp import chunks, handshake

Attack = Callable[[BalancerProcess, threading.Event], None]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


ATTACKER = "127.0.0.2"


def attacker_socket(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), source_address=(ATTACKER, 0))


def rtmp_handshaken(port: int) -> socket.socket:
    s = attacker_socket(port)
    s.sendall(bytes([handshake.VERSION]) + bytes(handshake.PACKET))
    need = 1 + 2 * handshake.PACKET
    got = 0
    while got < need:
        chunk = s.recv(need - got)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        got += len(chunk)
    s.sendall(bytes(handshake.PACKET))  # C2
    return s


def rtmp_flood(lb: BalancerProcess, stop: threading.Event) -> None:
    """Audio messages as fast as the socket takes them, reconnecting when dropped."""
    encoder = chunks.ChunkEncoder()
    burst = b"".join(encoder.encode(chunks.Message(8, b"\xaf" * 1000, csid=4, stream_id=1))
                     for _ in range(64))
    while not stop.is_set():
        try:
            with rtmp_handshaken(lb.http_port) as s:
                while not stop.is_set():
                    s.sendall(burst)
        except OSError:
            continue


def rtmp_trickle(lb: BalancerProcess, stop: threading.Event, count: int = 1000) -> None:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            with contextlib.suppress(OSError):
                socks.append(rtmp_handshaken(lb.http_port))
        while not stop.wait(1.0):
            for s in socks:
                with contextlib.suppress(OSError):
                    s.send(b"\x00")
    finally:
        for s in socks:
            s.close()


def http_slowloris(lb: BalancerProcess, stop: threading.Event, count: int = 300) -> None:
    socks = []
    head = b"GET /loadbalancer HTTP/1.1\r\nHost: lb\r\nX-Slow: " + b"a" * 10_000
    try:
        for _ in range(count):
            with contextlib.suppress(OSError):
                socks.append(attacker_socket(lb.http_port))
        i = 0
        while not stop.wait(1.0):
            for s in list(socks):
                try:
                    s.send(head[i:i + 1])
                except OSError:
                    socks.remove(s)
                    with contextlib.suppress(OSError):
                        socks.append(attacker_socket(lb.http_port))
            i += 1
    finally:
        for s in socks:
            s.close()


def server_info(lb: BalancerProcess, stop: threading.Event) -> None:
    conn = http.client.HTTPConnection(HOST, lb.http_port, timeout=30)
    while not stop.is_set():
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn.request("GET", "/loadbalancer?serverInfoXML")
            conn.getresponse().read()
            continue
        conn = http.client.HTTPConnection(HOST, lb.http_port, timeout=30)


ATTACKS: dict[str, Attack | None] = {
    "none": None, "none-10k": None, "rtmp-flood": rtmp_flood, "rtmp-trickle": rtmp_trickle,
    "http-slowloris": http_slowloris, "server-info": server_info}


def probe(port: int, seconds: float) -> list[float]:
    """Latencies (ms) of /loadbalancer, 100 a second on one keep-alive connection."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        conn.request("GET", "/loadbalancer")
        conn.getresponse().read()
        out.append((time.perf_counter() - start) * 1000)
        time.sleep(max(0.0, 0.01 - (time.perf_counter() - start)))
    return out


@contextlib.contextmanager
def reporting(lb: BalancerProcess, edges: int, every: float) -> Iterator[list[int]]:
    """Made-up edges reporting every ``every`` seconds; yields ServerCount samples."""
    stop = threading.Event()
    counts: list[int] = []

    fleet = FakeEdges(edges, interval_ms=int(every * 1000))

    def report() -> None:
        while not stop.is_set():
            send_all(lb.udp_port, fleet.reports())
            stop.wait(every)

    def watch() -> None:
        while not stop.wait(0.25):
            with contextlib.suppress(Exception):
                counts.append(lb.attribute("ServerCount"))

    threads = [threading.Thread(target=report, daemon=True),
               threading.Thread(target=watch, daemon=True)]
    for t in threads:
        t.start()
    try:
        yield counts
    finally:
        stop.set()
        for t in threads:
            t.join(10)


def resolve_from_elsewhere(lb: BalancerProcess) -> bool:
    """A real RTMP client, from another address than the attacker's, gets its redirect."""
    r = subprocess.run([sys.executable, "-m", "lbmgmt", "resolve", "--timeout", "20",
                        f"rtmp://{HOST}:{lb.http_port}/redirect/x"],
                       capture_output=True, text=True, timeout=60)
    return r.returncode == 0 and r.stdout.startswith("rtmp://")


def run(name: str, attack: Attack | None, seconds: float, edges: int,
        tmp: Path) -> dict[str, object]:
    big = name in ("server-info", "none-10k")  # 10 000 edges: server-info's baseline
    lb = ProcessFleet(tmp, verbose=False).balancer(
        f"lb-{name}", cpu=0, timeout_ms=600_000 if big else 2500,
        # (out after 2.5 s unread, as before missed_reports: the probe stays as sharp)
        config={"balancer": {"max_silence_ms": 600_000 if big else 2500},
                "rtmp": {"apps": {"redirect": {"mode": "redirect"},
                                  "live": {"mode": "proxy"}}}}).wait_ready()
    try:
        wait_port(lb.http_port)
        if big:
            send_all(lb.udp_port, fake_reports(10_000), pace=20_000)
            while lb.attribute("ServerCount") < 10_000:
                time.sleep(0.2)
        stop = threading.Event()
        with reporting(lb, 0 if big else edges, 1.0) as counts:
            time.sleep(3 if not big else 0.5)  # every edge listed
            assert lb.popen is not None
            rss_before = rss_kib(lb.popen.pid)
            attacker = None
            if attack is not None:
                attacker = threading.Thread(target=attack, args=(lb, stop), daemon=True)
                attacker.start()
                time.sleep(1.0)  # the attack is under way
            counts.clear()
            resolved: list[bool] = []
            resolver = threading.Thread(target=lambda: resolved.append(
                resolve_from_elsewhere(lb)), daemon=True)
            resolver.start()
            latencies = probe(lb.http_port, seconds)
            resolver.join(60)
            rss_after = rss_kib(lb.popen.pid)
            stop.set()
            if attacker is not None:
                attacker.join(15)
        qs = statistics.quantiles(latencies, n=100)
        return {"attack": name, "p50_ms": round(qs[49], 2), "p99_ms": round(qs[98], 2),
                "max_ms": round(max(latencies), 1), "requests": len(latencies),
                "fewest_edges": min(counts) if counts else None,
                "edges": 10_000 if big else edges,
                "rss_growth_kib": rss_after - rss_before,
                "resolve_ok": bool(resolved and resolved[0])}
    finally:
        lb.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--edges", type=int, default=50)
    parser.add_argument("--only", nargs="*", choices=list(ATTACKS), default=list(ATTACKS))
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:  # the prober and attackers off the balancer's core
        os.sched_setaffinity(0, {1})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            rows.append(run(name, ATTACKS[name], args.seconds, args.edges, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    print(f"{'attack':<16}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'edges min':>10}"
          f"{'RSS +KiB':>10}{'resolve':>9}")
    for r in rows:
        print(f"{r['attack']:<16}{r['p50_ms']:>8}{r['p99_ms']:>8}{r['max_ms']:>8}"
              f"{str(r['fewest_edges']) + '/' + str(r['edges']):>10}{r['rss_growth_kib']:>10}"
              f"{'ok' if r['resolve_ok'] else 'FAILED':>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
