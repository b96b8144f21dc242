"""A balancer and edges as objects in the running event loop, on loopback.

The demo runs one; the console tests, the in-process tests and the benchmarks
use the same set-up, so there is one place that knows how to wire the daemons
together::

    async with InProcessFleet(tmp_path) as fleet:
        balancer = await fleet.start_balancer()
        edge = await fleet.add_edge("edge1", load=3)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from lbmgmt.balancer.config import BalancerConfig, HttpConfig
from lbmgmt.balancer.daemon import BalancerDaemon
from lbmgmt.balancer.rtmp_config import RtmpConfig
from lbmgmt.clocks import Clocks
from lbmgmt.edge.config import EdgeConfig
from lbmgmt.edge.daemon import EdgeDaemon
from lbmgmt.edge.monitors import LoadMonitor, ManualMonitor
from lbmgmt.edge.targets import ReportTarget
from lbmgmt.endpoints import Endpoint
from lbmgmt.fleet.ports import HOST
from lbmgmt.management.auth import Credentials
from lbmgmt.management.config import ManagementConfig
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey


class InProcessFleet:
    """One balancer (restartable) and any number of edges reporting to it.

    Every port defaults to 0 (the kernel picks); ``mgmt_port=None`` runs a
    daemon without a management port. GUIDs are kept in ``workdir``.
    """

    def __init__(self, workdir: Path, *, key: SharedKey | str = "in-process-fleet",
                 host: str = HOST) -> None:
        self.workdir = Path(workdir)
        self.key = key if isinstance(key, SharedKey) else SharedKey(key)
        self.host = host
        self.balancer: BalancerDaemon | None = None
        self.edges: list[EdgeDaemon] = []
        self._sealers: dict[str, ReportSealer] = {}

    async def __aenter__(self) -> InProcessFleet:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- the balancer -------------------------------------------------------------
    async def start_balancer(self, *, udp_port: int = 0, http_port: int = 0,
                             mgmt_port: int | None = 0, message_timeout_ms: int = 5000,
                             credentials: Credentials | None = None,
                             rtmp: RtmpConfig | None = None, redirector: str | None = None,
                             clocks: Clocks | None = None) -> BalancerDaemon:
        config = BalancerConfig(
            key=self.key, listen=Endpoint(self.host, udp_port),
            message_timeout_ms=message_timeout_ms,
            http=HttpConfig(listen=(Endpoint(self.host, http_port),)),
            management=(None if mgmt_port is None else
                        ManagementConfig(Endpoint(self.host, mgmt_port), credentials=credentials)),
            rtmp=rtmp if rtmp is not None else RtmpConfig())
        if redirector is not None:
            config.redirector = redirector
        balancer = BalancerDaemon(config, clocks=clocks)
        await balancer.start()
        self.balancer = balancer
        return balancer

    @property
    def udp_port(self) -> int:
        assert self.balancer is not None and self.balancer.udp_address is not None
        return self.balancer.udp_address[1]

    @property
    def http_port(self) -> int:
        assert self.balancer is not None and self.balancer.http_address is not None
        return self.balancer.http_address[1]

    @property
    def mgmt_port(self) -> int:
        assert self.balancer is not None and self.balancer.management is not None
        assert self.balancer.management.address is not None
        return self.balancer.management.address[1]

    def report(self, address: str, load: float = 0.0, *, state: EdgeState = EdgeState.RUNNING,
               interval_ms: int = 2500, capacity: float | None = None,
               **extensions: Any) -> None:
        """Hand the balancer one sealed report from a made-up edge, as if it came by UDP
        (``extensions``: Report's extension fields, ``streams=``, ``group=``…)."""
        assert self.balancer is not None
        sealer = self._sealers.get(address)
        if sealer is None:
            sealer = self._sealers[address] = ReportSealer(uuid.uuid4())
        clocks = self.balancer.clocks
        self.balancer.core.receive_datagram(
            sealer.seal(Report(state, address, load, interval_ms, capacity, **extensions),
                        self.key, now=clocks.wall()),
            now=clocks.monotonic(), wall=clocks.wall())

    def redirect(self, protocol: str = "http", stream: str | None = None) -> str | None:
        """Ask the balancer for an edge as a new client would now (of ``stream``, if
        named): its address, or None."""
        assert self.balancer is not None
        entry = self.balancer.core.redirect(protocol, self.balancer.clocks.monotonic(),
                                            stream=stream)
        return None if entry is None else entry.address

    # -- edges --------------------------------------------------------------------
    async def add_edge(self, name: str, load: float = 0.0, *, address: str | None = None,
                       interval_ms: int = 2500, monitor: LoadMonitor | None = None,
                       mgmt_port: int | None = 0, guid: uuid.UUID | None = None,
                       targets: list[ReportTarget] | None = None,
                       clock: Callable[[], float] = time.time,
                       capacity: float | None = None) -> EdgeDaemon:
        """Start an edge reporting to this fleet's balancer (or to ``targets``)."""
        guid_file = self.workdir / f"{name}.guid"
        if guid is not None:
            guid_file.write_text(f"{guid}\n")
        if targets is None:
            targets = [ReportTarget(self.host, self.udp_port, self.key, 1)]
        edge = EdgeDaemon(EdgeConfig(
            redirect_address=address or f"{name}.example:1935",
            targets_file=self.workdir / f"{name}.targets", guid_file=guid_file,
            message_interval_ms=interval_ms, capacity=capacity,
            monitor=monitor if monitor is not None else ManualMonitor(load),
            management=(None if mgmt_port is None else
                        ManagementConfig(Endpoint(self.host, mgmt_port)))),
            targets=targets, clock=clock)
        await edge.start()
        self.edges.append(edge)
        return edge

    # -- stopping -----------------------------------------------------------------
    async def stop_edges(self) -> None:
        edges, self.edges = self.edges, []
        for edge in edges:
            await edge.stop()

    async def stop_balancer(self) -> None:
        balancer, self.balancer = self.balancer, None
        if balancer is not None:
            await balancer.stop()

    async def stop(self) -> None:
        """Edges first (their stopping reports reach a live balancer), then the balancer."""
        try:
            await self.stop_edges()
        finally:
            await self.stop_balancer()
