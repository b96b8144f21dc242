"""The daemons as real ``python -m lbmgmt`` processes on loopback.

End-to-end tests and benchmarks start every process exactly as a user would,
from a config file (written with a TOML writer, never by string formatting)
and a targets file, and observe it only through its ports. ``cleanup()``
kills whatever is still running.

``loop`` picks the daemons' event loop through ``LBMGMT_LOOP`` (``asyncio``
or ``uvloop``; None: uvloop when installed, as for users).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from lbmgmt.fleet.ports import HOST, free_port, wait_port

Table = dict[str, Any]


def merged(base: Table, extra: Table | None) -> Table:
    """``base`` with ``extra`` laid over it, table by table."""
    out = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def write_toml(path: Path, data: Table) -> Path:
    path.write_bytes(tomli_w.dumps(data).encode())
    return path


def pinned(cpu: int | None) -> list[str]:
    """A taskset prefix, so server and load generator keep to their own cores."""
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(cpu)]


@dataclass
class DaemonProcess:
    name: str
    args: list[str]
    workdir: Path
    mgmt_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    cpu: int | None = None
    popen: subprocess.Popen[bytes] | None = None

    @property
    def mgmt_url(self) -> str:
        return f"http://{HOST}:{self.mgmt_port}"

    def start(self) -> DaemonProcess:
        with open(self.workdir / f"{self.name}.out", "wb") as out, \
                open(self.workdir / f"{self.name}.err", "wb") as err:
            self.popen = subprocess.Popen(
                [*pinned(self.cpu), sys.executable, "-m", "lbmgmt", *self.args],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.workdir,
                env={**os.environ, **self.env})
        return self

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        """The exit status; subprocess.TimeoutExpired if still running after ``timeout``."""
        assert self.popen is not None
        return self.popen.wait(timeout)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def stderr(self) -> str:
        return (self.workdir / f"{self.name}.err").read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the daemons stop cleanly on it), SIGKILL if that takes over ``timeout``."""
        if self.running:
            self.signal(signal.SIGTERM)
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def wait_management(self, timeout: float = 30.0) -> None:
        wait_port(self.mgmt_port, timeout)

    def rpc(self, method: str, *params: object, timeout: float = 30.0) -> Any:
        """One JSON-RPC call to the management port (no login), its result or RuntimeError."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                           "params": list(params)}).encode()
        request = urllib.request.Request(f"{self.mgmt_url}/jsonrpc", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            answer = json.load(resp)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["result"]


@dataclass
class BalancerProcess(DaemonProcess):
    udp_port: int = 0
    http_port: int = 0
    key: str = ""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def attribute(self, name: str) -> Any:
        return self.rpc("getAttribute", "lbmgmt:type=Balancer", name)

    def wait_ready(self, timeout: float = 30.0) -> BalancerProcess:
        wait_port(self.http_port, timeout)
        self.wait_management(timeout)
        return self


@dataclass
class EdgeProcess(DaemonProcess):
    address: str = ""

    @property
    def guid_file(self) -> Path:
        return self.workdir / f"{self.name}.guid"

    @property
    def guid(self) -> str:
        return self.guid_file.read_text().strip()


TargetSpec = BalancerProcess | tuple[str, int, str]


@dataclass
class ProcessFleet:
    """Starts balancers and edges as processes in ``workdir``; ``cleanup()`` kills them."""

    workdir: Path
    interval_ms: int = 2500
    timeout_ms: int = 5000
    key: str = "fleet-shared-key"
    loop: str | None = None
    verbose: bool = True
    procs: list[DaemonProcess] = field(default_factory=list)

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**({"LBMGMT_LOOP": self.loop} if self.loop else {}), **(extra or {})}

    def _args(self, daemon: str, config: Path) -> list[str]:
        return [daemon, "--config", str(config), *(["-v"] if self.verbose else [])]

    def balancer(self, name: str = "lb", *, key: str | None = None,
                 udp_port: int | None = None, http_port: int | None = None,
                 mgmt_port: int | None = None, timeout_ms: int | None = None,
                 config: Table | None = None, cpu: int | None = None,
                 env: dict[str, str] | None = None) -> BalancerProcess:
        """Start a balancer; ``config`` tables are laid over the generated ones."""
        key = key or self.key
        udp_port = udp_port or free_port(socket.SOCK_DGRAM)
        http_port = http_port or free_port()
        mgmt_port = mgmt_port or free_port()
        data = merged({
            "balancer": {"listen": f"{HOST}:{udp_port}", "key": key,
                         "message_timeout_ms": timeout_ms or self.timeout_ms},
            "http": {"listen": f"{HOST}:{http_port}"},
            "management": {"listen": f"{HOST}:{mgmt_port}"},
        }, config)
        path = write_toml(self.workdir / f"{name}.toml", data)
        proc = BalancerProcess(name, self._args("balancer", path), self.workdir,
                               mgmt_port=mgmt_port, env=self._env(env), cpu=cpu,
                               udp_port=udp_port, http_port=http_port, key=key)
        self.procs.append(proc.start())
        return proc

    def edge(self, name: str, targets: list[TargetSpec], *, address: str | None = None,
             interval_ms: int | None = None, monitor: Table | None = None,
             mgmt_port: int | None = None, config: Table | None = None,
             cpu: int | None = None, env: dict[str, str] | None = None) -> EdgeProcess:
        """Start an edge reporting to ``targets`` (balancers or (host, port, key) lines)."""
        lines = ["# host,port,key"]
        for t in targets:
            lines.append(f"{HOST},{t.udp_port},{t.key}" if isinstance(t, BalancerProcess)
                         else ",".join(map(str, t)))
        (self.workdir / f"{name}.targets").write_text("\n".join(lines) + "\n")
        address = address or f"{name}.example:1935"
        mgmt_port = mgmt_port or free_port()
        data: Table = {
            "edge": {"redirect_address": address, "targets_file": f"{name}.targets",
                     "guid_file": f"{name}.guid",
                     "message_interval_ms": interval_ms or self.interval_ms},
            "management": {"listen": f"{HOST}:{mgmt_port}"},
        }
        if monitor is not None:
            data["monitor"] = monitor
        path = write_toml(self.workdir / f"{name}.toml", merged(data, config))
        proc = EdgeProcess(name, self._args("edge", path), self.workdir, mgmt_port=mgmt_port,
                           env=self._env(env), cpu=cpu, address=address)
        self.procs.append(proc.start())
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            proc.kill()
