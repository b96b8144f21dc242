"""Load monitors: how an edge measures the load it reports.

A monitor is chosen in the edge config by short name or ``module:Class``. The
edge never knows what media server it sits beside; a monitor turns whatever
that server exposes into one number.
"""

from __future__ import annotations

import abc
import asyncio
import errno
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import aiohttp

from lbmgmt.configfile import Section
from lbmgmt.edge import sockdiag
from lbmgmt.plugins import resolve_plugin


class MonitorError(RuntimeError):
    """The monitor could not measure; the edge keeps its last load and says so."""


class LoadMonitor(abc.ABC):
    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, section: Section) -> LoadMonitor:
        """Build from the ``[monitor]`` table; read every key so typos are caught."""

    @abc.abstractmethod
    async def read(self) -> float:
        """The current load, a finite number >= 0."""

    def describe(self) -> str:
        return self.name

    def bandwidth(self) -> float | None:
        """Outbound bits/s the media server says it sends, as of the last ``read``;
        None if this monitor cannot tell (the default)."""
        return None

    async def close(self) -> None:
        return None


class ManualMonitor(LoadMonitor):
    """Load set from outside (the daemon's API): the default when embedding."""

    name = "manual"

    def __init__(self, load: float = 0.0) -> None:
        self.load = 0.0
        self.set_load(load)

    @classmethod
    def from_config(cls, section: Section) -> ManualMonitor:
        return cls(section.get_number("load", 0.0, min=0))

    def set_load(self, load: float) -> None:
        load = float(load)
        if not (math.isfinite(load) and load >= 0):
            raise ValueError(f"load must be a finite number >= 0, not {load!r}")
        self.load = load

    async def read(self) -> float:
        return self.load


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


class NginxRtmpMonitor(LoadMonitor):
    """Viewer count of an nginx-rtmp server beside the edge, from its stat page.

    nginx-rtmp's ``rtmp_stat all`` XML has no per-server total: the load is
    the sum of ``application/live/nclients`` over the applications (all, or
    those listed), which counts players and publishers alike.
    """

    name = "nginx-rtmp"

    def __init__(self, url: str, *, applications: Iterable[str] | None = None,
                 timeout: float = 2.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"stat URL must be http(s)://, not {url!r}")
        self.url = url
        self.applications = frozenset(applications) if applications else None
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._bandwidth: float | None = None

    @classmethod
    def from_config(cls, section: Section) -> NginxRtmpMonitor:
        url = section.get_str("url", "http://127.0.0.1:8080/stat")
        apps = section.get_str_list("applications", None)
        timeout = section.get_int("timeout_ms", 2000, min=10, max=60_000) / 1000
        try:
            return cls(url, applications=apps, timeout=timeout)
        except ValueError as exc:
            section.fail("url", str(exc))

    def describe(self) -> str:
        apps = f" applications={','.join(sorted(self.applications))}" if self.applications else ""
        return f"{self.name} url={self.url}{apps}"

    async def read(self) -> float:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.get(self.url) as resp:
                if resp.status != 200:
                    raise MonitorError(f"{self.url} answered HTTP {resp.status}")
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MonitorError(f"cannot read {self.url}: {exc or type(exc).__name__}") from None
        root = stat_page(body)
        self._bandwidth = bw_out(root)
        return float(count_nginx_rtmp_clients(root, self.applications))

    def bandwidth(self) -> float | None:
        """nginx-rtmp's own ``bw_out`` (bits/s, all applications), from the last read."""
        return self._bandwidth

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def stat_page(xml: bytes) -> ET.Element:
    """nginx-rtmp's ``rtmp_stat all`` document, or MonitorError saying what it is not."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise MonitorError(f"stat page is not XML: {exc}") from None
    if root.tag != "rtmp":
        raise MonitorError(f"stat page root is <{root.tag}>, not <rtmp> (rtmp_stat all?)")
    return root


def bw_out(root: ET.Element) -> float | None:
    """The server's outbound bits/s (``<rtmp><bw_out>``), None if absent or not a number."""
    text = root.findtext("bw_out")
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value < float("inf") else None


def count_nginx_rtmp_clients(xml: bytes | ET.Element,
                             applications: frozenset[str] | None = None) -> int:
    root = xml if isinstance(xml, ET.Element) else stat_page(xml)
    total = 0
    for app in root.iterfind("server/application"):
        if applications is not None and (app.findtext("name") or "") not in applications:
            continue
        text = app.findtext("live/nclients")
        if text is not None:
            try:
                total += int(text)
            except ValueError:
                raise MonitorError(f"nclients is not a number: {text!r}") from None
    return total


BUILTIN_MONITORS: dict[str, type[LoadMonitor]] = {
    ManualMonitor.name: ManualMonitor,
    TcpConnectionsMonitor.name: TcpConnectionsMonitor,
    NginxRtmpMonitor.name: NginxRtmpMonitor,
}


def monitor_class(spec: str) -> type[LoadMonitor]:
    return resolve_plugin("monitor", spec, BUILTIN_MONITORS, LoadMonitor)
