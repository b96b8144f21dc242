"""The media server's clients as TCP connections on its ports, asked of the kernel."""

from __future__ import annotations

import asyncio
import errno
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from lbmgmt.configfile import Section
from lbmgmt.edge import sockdiag
from lbmgmt.edge.monitors.base import LoadMonitor, MonitorError


class TcpConnectionsMonitor(LoadMonitor):
    """Established TCP connections on given local ports, asked of the kernel; and a
    listener on each, or the media server is down.

    This is the load of any media server running beside the edge (RTMP on 1935, HLS on
    80/443...) without talking to it. Asked through sock_diag with a port filter the
    kernel runs (``lbmgmt/edge/sockdiag.py``, as ``ss`` does): only the watched ports'
    sockets come back, a few milliseconds however busy the host. Where netlink is
    refused (some sandboxes) it reads /proc/net/tcp{,6} instead, every socket of the
    host as text. A watched port with no listening socket is a failure (the edge then
    reports itself unhealthy), unless ``require_listener = false``.
    """

    name = "tcp-connections"
    PROC_FILES = ("/proc/net/tcp", "/proc/net/tcp6")

    def __init__(self, ports: Iterable[int], *, require_listener: bool = True,
                 proc_files: Iterable[str] | None = None) -> None:
        self.ports = frozenset(ports)
        if not self.ports:
            raise ValueError("tcp-connections needs at least one port")
        if len(self.ports) > sockdiag.MAX_PORTS:
            raise ValueError(f"tcp-connections watches at most {sockdiag.MAX_PORTS} ports")
        self.require_listener = require_listener
        self.proc_files = tuple(proc_files or self.PROC_FILES)
        self.netlink = proc_files is None  # False once the kernel refused it: /proc
        if not self.netlink and not any(Path(p).exists() for p in self.proc_files):
            raise MonitorError("tcp-connections needs Linux /proc/net/tcp")

    @classmethod
    def from_config(cls, section: Section) -> TcpConnectionsMonitor:
        ports = section.get_int_list("ports", min=1, max=65535)
        if not ports:
            section.fail("ports", "must list at least one port")
        if len(set(ports)) > sockdiag.MAX_PORTS:
            section.fail("ports", f"at most {sockdiag.MAX_PORTS} ports")
        return cls(ports, require_listener=section.get_bool("require_listener", True))

    def describe(self) -> str:
        return f"{self.name} ports={','.join(map(str, sorted(self.ports)))}"

    async def read(self) -> float:
        return float(await asyncio.to_thread(self.count))

    def count(self) -> int:
        counts = self.port_states()
        if self.require_listener:
            missing = sorted(p for p in self.ports if not counts[sockdiag.TCP_LISTEN, p])
            if missing:
                raise MonitorError(f"nothing listens on port {', '.join(map(str, missing))} "
                                   "(the media server is down?)")
        return sum(counts[sockdiag.TCP_ESTABLISHED, p] for p in self.ports)

    def port_states(self) -> Counter[tuple[int, int]]:
        """Sockets on the watched ports by (TCP state, port)."""
        if self.netlink:
            try:
                return sockdiag.port_states(self.ports)
            except sockdiag.SockDiagUnavailable:  # not Linux, netlink refused: /proc
                self.netlink = False
            except sockdiag.SockDiagError as exc:
                if exc.errno != errno.EINVAL:
                    raise MonitorError(str(exc)) from None
                self.netlink = False  # the kernel refused the filter: /proc from now on
            except OSError as exc:  # a passing error (timeout, no buffer): this read only
                raise MonitorError(f"sock_diag: {exc.strerror or exc}") from None
        counts: Counter[tuple[int, int]] = Counter()
        found = False
        for path in self.proc_files:
            try:
                with open(path, encoding="ascii") as f:
                    next(f, None)  # header line
                    counts.update(count_states(f, self.ports))
                found = True
            except FileNotFoundError:  # no IPv6 on this host
                continue
            except OSError as exc:
                raise MonitorError(f"cannot read {path}: {exc.strerror}") from None
        if not found:
            raise MonitorError("no /proc/net/tcp table readable")
        return counts


def count_states(lines: Iterable[str], ports: frozenset[int]) -> Counter[tuple[int, int]]:
    """Rows of a /proc/net/tcp table on ``ports`` (local), by (state, port)."""
    counts: Counter[tuple[int, int]] = Counter()
    for line in lines:
        fields = line.split(None, 4)
        if len(fields) < 4:
            continue
        _, _, port_hex = fields[1].rpartition(":")
        try:
            port = int(port_hex, 16)
            if port in ports:
                counts[int(fields[3], 16), port] += 1
        except ValueError:
            continue
    return counts


def count_established(lines: Iterable[str], ports: frozenset[int]) -> int:
    """Count rows of a /proc/net/tcp table in ESTABLISHED state on ``ports``."""
    counts = count_states(lines, ports)
    return sum(n for (state, _), n in counts.items() if state == sockdiag.TCP_ESTABLISHED)
