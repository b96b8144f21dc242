"""RTMP proxy throughput: client → balancer (proxy app) → edge, against client → edge.

    python -m bench.relay [--mb 512] [--rounds 3]

A real balancer process relays a real RTMP connection (handshake and connect
from the client, replayed to the edge) to a sink edge that discards what it
gets; the direct baseline sends the same bytes to the same sink. The balancer
relays with its one relay, a 1 MiB buffer copy (lbmgmt/balancer/relay.py).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench.reports import KEY
from lbmgmt.fleet.ports import HOST, wait_port
from lbmgmt.fleet.processes import BalancerProcess, ProcessFleet
from lbmgmt.rtmp.client import ClientConnection
from lbmgmt.rtmp import handshake
from lbmgmt.rtmp.server import HandshakeCompleted
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey

BLOCK = 1 << 20


class Sink:
    """An edge that completes the RTMP handshake, then counts and discards every byte."""

    def __init__(self) -> None:
        self.server = socket.create_server((HOST, 0))
        self.port = self.server.getsockname()[1]
        self.done = threading.Event()
        self.received = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.server.accept()
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        buf = bytearray(BLOCK)
        with conn:
            c0c1 = self._exactly(conn, 1 + handshake.PACKET)
            conn.sendall(handshake.server_reply(c0c1[1:], time_ms=0,
                                                random=os.urandom(handshake.PACKET - 8)))
            self._exactly(conn, handshake.PACKET)  # C2
            total = 0  # everything after the handshake: connect, then the payload
            while n := conn.recv_into(buf):
                total += n
        self.received = total
        self.done.set()


    @staticmethod
    def _exactly(conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
        return data


def client_stream(port: int, app: str, megabytes: int) -> float:
    """Handshake, connect to ``app``, then send ``megabytes`` MiB; seconds until all sent."""
    rtmp = ClientConnection()
    payload = os.urandom(BLOCK)
    with socket.create_connection((HOST, port)) as s:
        s.sendall(rtmp.data_to_send())
        while True:
            events = rtmp.receive_data(s.recv(65536))
            if any(isinstance(e, HandshakeCompleted) for e in events):
                break
        rtmp.connect(app, f"rtmp://{HOST}:{port}/{app}")
        s.sendall(rtmp.data_to_send())
        start = time.perf_counter()
        for _ in range(megabytes):
            s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        while s.recv(65536):  # until the far side closes
            pass
    return time.perf_counter() - start


def run_once(port: int, app: str, sink: Sink, megabytes: int) -> float:
    sink.done.clear()
    start = time.perf_counter()
    client_stream(port, app, megabytes)
    sink.done.wait(60)
    elapsed = time.perf_counter() - start
    if sink.received < megabytes * BLOCK:
        raise RuntimeError(f"sink got {sink.received} of {megabytes * BLOCK} bytes")
    return megabytes / elapsed


def start_balancer(workdir: Path) -> BalancerProcess:
    """A balancer whose `live` application proxies."""
    lb = ProcessFleet(workdir, verbose=False).balancer(
        "lb", timeout_ms=600_000,
        config={"management": {"enabled": False},
                "rtmp": {"apps": {"live": {"mode": "proxy"}}}})
    wait_port(lb.http_port)
    return lb


def register(udp_port: int, address: str) -> None:
    sealer = ReportSealer(uuid.uuid4())
    datagram = sealer.seal(Report(EdgeState.RUNNING, address, 0, 600000), SharedKey(KEY),
                           now=time.time())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(datagram, (HOST, udp_port))
    time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512, help="MiB per transfer (default 512)")
    parser.add_argument("--rounds", type=int, default=3, help="best of N (default 3)")
    args = parser.parse_args()
    sink = Sink()
    with tempfile.TemporaryDirectory() as tmp:
        lb = start_balancer(Path(tmp))
        try:
            register(lb.udp_port, f"{HOST}:{sink.port}")
            direct = max(run_once(sink.port, "live", sink, args.mb)
                         for _ in range(args.rounds))
            proxied = max(run_once(lb.http_port, "live", sink, args.mb)
                          for _ in range(args.rounds))
        finally:
            lb.stop()
    print(f"{'path':<28}{'MiB/s':>10}{'vs direct':>12}")
    print(f"{'direct (baseline)':<28}{direct:>10.0f}{1.0:>12.2f}")
    print(f"{'through balancer, copy':<28}{proxied:>10.0f}{proxied / direct:>12.2f}")
    print(json.dumps({"bench": "relay", "mb": args.mb, "rounds": args.rounds,
                      "direct_copy_run": round(direct, 1), "proxy_copy": round(proxied, 1),
                      "ratio_copy": round(proxied / direct, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
