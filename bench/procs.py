"""Real daemon processes and fake fleets for the benchmarks (loopback only)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey

HOST = "127.0.0.1"
KEY = "bench-key"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def pinned(cpu: int | None) -> list[str]:
    """Prefix a command with taskset, so server and load generator keep to their cores."""
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(cpu)]


def stop(proc: subprocess.Popen | None) -> None:
    """SIGTERM (the daemons stop cleanly on it), SIGKILL if that takes over 10 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Balancer:
    workdir: Path
    name: str = "lb"
    redirector: str = "concurrent-connects"
    timeout_ms: int = 600_000
    cpu: int | None = None
    udp_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    http_port: int = field(default_factory=free_port)
    mgmt_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def start(self) -> Balancer:
        config = self.workdir / f"{self.name}.toml"
        config.write_text(f"""
[balancer]
listen = "{HOST}:{self.udp_port}"
key = "{KEY}"
message_timeout_ms = {self.timeout_ms}
redirector = "{self.redirector}"
[http]
listen = "{HOST}:{self.http_port}"
[management]
listen = "{HOST}:{self.mgmt_port}"
""")
        self.proc = subprocess.Popen(
            [*pinned(self.cpu), sys.executable, "-m", "lbmgmt", "balancer", "-c", str(config)])
        wait_port(self.http_port)
        wait_port(self.mgmt_port)
        return self

    def rpc(self, method: str, *params: object) -> object:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                           "params": list(params)}).encode()
        request = urllib.request.Request(f"http://{HOST}:{self.mgmt_port}/jsonrpc", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.load(resp)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["result"]

    def attribute(self, name: str) -> object:
        return self.rpc("getAttribute", "lbmgmt:type=Balancer", name)

    def stop(self) -> None:
        stop(self.proc)



@dataclass
class Edge:
    workdir: Path
    name: str
    targets: list[Balancer]
    address: str
    monitor: str = ""
    interval_ms: int = 2500
    proc: subprocess.Popen | None = None
    mgmt_port: int = field(default_factory=free_port)

    def start(self) -> Edge:
        (self.workdir / f"{self.name}.targets").write_text(
            "".join(f"{HOST},{b.udp_port},{KEY}\n" for b in self.targets))
        config = self.workdir / f"{self.name}.toml"
        config.write_text(f"""
[edge]
redirect_address = "{self.address}"
targets_file = "{self.name}.targets"
guid_file = "{self.name}.guid"
message_interval_ms = {self.interval_ms}
{self.monitor}
[management]
listen = "{HOST}:{self.mgmt_port}"
""")
        self.proc = subprocess.Popen([sys.executable, "-m", "lbmgmt", "edge", "-c",
                                      str(config)], cwd=self.workdir)
        return self

    @property
    def guid(self) -> str:
        return (self.workdir / f"{self.name}.guid").read_text().strip()

    def stop(self) -> None:
        stop(self.proc)



def fake_reports(count: int, *, interval_ms: int = 600_000, load: float = 0.0
                 ) -> list[bytes]:
    """One sealed RUNNING report from each of ``count`` made-up edges."""
    key = SharedKey(KEY)
    now = time.time()
    out = []
    for i in range(count):
        sealer = ReportSealer(uuid.uuid4())
        out.append(sealer.seal(Report(EdgeState.RUNNING, f"10.{i >> 16 & 255}."
                                      f"{i >> 8 & 255}.{i & 255}:1935", load, interval_ms),
                               key, now=now))
    return out


def send_all(port: int, datagrams: list[bytes], *, pace: float | None = None) -> None:
    """Send datagrams to a balancer, as fast as possible or at ``pace`` per second."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        start = time.perf_counter()
        for i, data in enumerate(datagrams):
            if pace:
                delay = start + i / pace - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            with contextlib.suppress(BlockingIOError):
                s.sendto(data, (HOST, port))
