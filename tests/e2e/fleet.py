"""Real daemon processes on loopback for end-to-end tests.

Every process is started with ``python -m lbmgmt`` exactly as a user would,
observed only through HTTP and UDP, and killed at teardown whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

HOST = "127.0.0.1"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    args: list[str]
    workdir: Path
    mgmt_port: int = 0
    popen: subprocess.Popen | None = None

    @property
    def mgmt_url(self) -> str:
        return f"http://{HOST}:{self.mgmt_port}"

    def start(self) -> Proc:
        with open(self.workdir / f"{self.name}.out", "wb") as out, \
                open(self.workdir / f"{self.name}.err", "wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "lbmgmt", *self.args, "-v"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.workdir)
        return self

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 5.0) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    @property
    def stderr(self) -> str:
        return (self.workdir / f"{self.name}.err").read_text(errors="replace")

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class Balancer(Proc):
    udp_port: int = 0
    http_port: int = 0
    key: str = ""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"


@dataclass
class Edge(Proc):
    address: str = ""

    @property
    def guid_file(self) -> Path:
        return self.workdir / f"{self.name}.guid"

    @property
    def guid(self) -> str:
        return self.guid_file.read_text().strip()


@dataclass
class Fleet:
    workdir: Path
    session: aiohttp.ClientSession
    interval_ms: int = 200
    timeout_ms: int = 1000
    procs: list[Proc] = field(default_factory=list)

    def balancer(self, name: str = "lb", *, key: str = "e2e-shared-key",
                 udp_port: int | None = None, http_port: int | None = None,
                 timeout_ms: int | None = None, extra: str = "", management: str = "",
                 mgmt_port: int | None = None, rtmp: str = "") -> Balancer:
        udp_port = udp_port or free_port(socket.SOCK_DGRAM)
        http_port = http_port or free_port()
        mgmt_port = mgmt_port or free_port()
        config = self.workdir / f"{name}.toml"
        config.write_text(f"""
[balancer]
listen = "{HOST}:{udp_port}"
key = "{key}"
message_timeout_ms = {timeout_ms or self.timeout_ms}
{extra}
[http]
listen = "{HOST}:{http_port}"
[management]
listen = "{HOST}:{mgmt_port}"
{management}
{rtmp}
""")
        proc = Balancer(name, ["balancer", "--config", str(config)], self.workdir,
                        mgmt_port=mgmt_port, udp_port=udp_port, http_port=http_port, key=key)
        self.procs.append(proc.start())
        return proc

    def edge(self, name: str, targets: list[Balancer] | list[tuple[str, int, str]], *,
             address: str | None = None, monitor: str = "", interval_ms: int | None = None,
             management: str = "", mgmt_port: int | None = None) -> Edge:
        lines = ["# e2e targets"]
        for t in targets:
            lines.append(f"{HOST},{t.udp_port},{t.key}" if isinstance(t, Balancer)
                         else ",".join(map(str, t)))
        (self.workdir / f"{name}.targets").write_text("\n".join(lines) + "\n")
        address = address or f"{name}.example:1935"
        mgmt_port = mgmt_port or free_port()
        config = self.workdir / f"{name}.toml"
        config.write_text(f"""
[edge]
redirect_address = "{address}"
targets_file = "{name}.targets"
guid_file = "{name}.guid"
message_interval_ms = {interval_ms or self.interval_ms}
{monitor}
[management]
listen = "{HOST}:{mgmt_port}"
{management}
""")
        proc = Edge(name, ["edge", "--config", str(config)], self.workdir, mgmt_port=mgmt_port,
                    address=address)
        self.procs.append(proc.start())
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.kill()

    # -- observing from outside ----------------------------------------------
    async def servers(self, balancer: Balancer) -> dict[str, dict[str, str]]:
        """serverInfoXML as {redirect address: {field: text}}; {} if not answering."""
        root = await self.server_info(balancer)
        if root is None:
            return {}
        return {s.findtext("redirect"): {c.tag: c.text or "" for c in s}
                for s in root.iter("Server")}

    async def server_info(self, balancer: Balancer) -> ET.Element | None:
        try:
            async with self.session.get(f"{balancer.url}/loadbalancer?serverInfoXML") as r:
                return ET.fromstring(await r.read()) if r.status == 200 else None
        except aiohttp.ClientError:
            return None

    async def redirect(self, balancer: Balancer) -> str | None:
        async with self.session.get(f"{balancer.url}/loadbalancer") as r:
            text = await r.text()
            return text.removeprefix("redirect=") if r.status == 200 else None


async def wait_until(predicate, timeout: float, *, interval: float = 0.01,
                     what: str = "condition") -> float:
    """Poll an async predicate; returns the seconds it took, fails after ``timeout``."""
    start = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not reached within {timeout:.2f}s")
        await asyncio.sleep(interval)


def wait_for_file(path: Path, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} not created within {timeout}s")
        time.sleep(0.005)
    return time.monotonic()


SIGTERM, SIGKILL = signal.SIGTERM, signal.SIGKILL
__all__ = ["Balancer", "Edge", "Fleet", "SIGKILL", "SIGTERM", "free_port", "wait_for_file",
           "wait_until", "os"]
