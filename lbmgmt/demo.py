"""``lbmgmt demo``: a balancer and a few edges on loopback, in one process.

Each demo edge also serves a tiny HTTP page on its redirect address, so
``curl -L .../redirect/...`` visibly lands on one of them; their loads drift
so the choice moves while you watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import signal
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from aiohttp import web

from lbmgmt.balancer.config import BalancerConfig, HttpConfig
from lbmgmt.balancer.daemon import BalancerDaemon
from lbmgmt.edge.config import EdgeConfig
from lbmgmt.edge.daemon import EdgeDaemon
from lbmgmt.edge.monitors import ManualMonitor
from lbmgmt.edge.targets import Target
from lbmgmt.endpoints import Endpoint
from lbmgmt.httpserve import serve_app
from lbmgmt.management.config import ManagementConfig
from lbmgmt.status import SharedKey

HOST = "127.0.0.1"


async def _edge_page(name: str) -> tuple[web.AppRunner, int]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"{name} would serve {request.path_qs}\n")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner, (_, port) = await serve_app(app, Endpoint(HOST, 0))
    return runner, port


async def run_demo(*, edges: int = 3, http_port: int = 1935, udp_port: int = 1934,
                   mgmt_port: int = 8084, interval_ms: int = 1000, out: TextIO = sys.stdout
                   ) -> None:
    key = SharedKey(secrets.token_hex(16))
    balancer = BalancerDaemon(BalancerConfig(
        key=key, listen=Endpoint(HOST, udp_port),
        message_timeout_ms=interval_ms * 2 + 1000,
        http=HttpConfig(listen=Endpoint(HOST, http_port)),
        management=ManagementConfig(Endpoint(HOST, mgmt_port))))
    await balancer.start()
    assert balancer.http_address and balancer.udp_address and balancer.management
    lb = f"http://{HOST}:{balancer.http_address[1]}"
    mgmt = balancer.management.address_text
    rng = random.Random()
    workdir = Path(tempfile.mkdtemp(prefix="lbmgmt-demo-"))
    pages: list[web.AppRunner] = []
    daemons: list[EdgeDaemon] = []
    lines = []
    try:
        for n in range(1, edges + 1):
            page, port = await _edge_page(f"edge {n}")
            pages.append(page)
            monitor = ManualMonitor(rng.randint(0, 20))
            edge = EdgeDaemon(
                EdgeConfig(redirect_address=f"{HOST}:{port}", targets_file=workdir / "none",
                           guid_file=workdir / f"edge{n}.guid", message_interval_ms=interval_ms,
                           monitor=monitor, management=ManagementConfig(Endpoint(HOST, 0))),
                targets=[Target(HOST, balancer.udp_address[1], key, 1)])
            await edge.start()
            daemons.append(edge)
            assert edge.management is not None
            lines.append(f"  edge {n:<3}  http://{HOST}:{port}  management "
                         f"{edge.management.address_text}  guid {edge.guid}")
        print(f"lbmgmt demo: a balancer and {edges} edges on {HOST} (Ctrl-C to stop)\n", file=out)
        print(f"  balancer  HTTP {lb}   status reports on UDP {HOST}:{balancer.udp_address[1]}"
              f"   management {mgmt}", file=out)
        print("\n".join(lines), file=out)
        print(f"""
Edge loads drift every few seconds; pick a URL and run it a few times:
  curl {lb}/loadbalancer
  curl '{lb}/loadbalancer?serverInfoXML'
  curl -i {lb}/redirect/live/stream.m3u8
  curl -L {lb}/redirect/live/stream.m3u8

Manage it (JSON-RPC 2.0 on the management ports; lb-console attaches there too):
  lbmgmt get {mgmt} lbmgmt:type=Balancer
  lbmgmt invoke {mgmt} lbmgmt:type=Balancer listServers
  lbmgmt call {mgmt} pollNotifications null 30
  curl -s {mgmt}/metrics
""", file=out, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set():
            for edge in daemons:
                drifting = edge.monitor
                assert isinstance(drifting, ManualMonitor)
                drifting.set_load(max(0, drifting.load + rng.randint(-3, 3)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 3.0)
    finally:
        for edge in daemons:
            await edge.stop()
        for page in pages:
            await page.cleanup()
        await balancer.stop()
