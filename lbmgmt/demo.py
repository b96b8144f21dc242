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
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from aiohttp import web

from lbmgmt.edge.monitors import ManualMonitor
from lbmgmt.endpoints import Endpoint
from lbmgmt.fleet.inprocess import InProcessFleet
from lbmgmt.fleet.ports import HOST
from lbmgmt.httpserve import serve_app


DEMO_CAPACITY = 50.0  # clients each demo edge says it takes: load bars, Headroom


async def _edge_page(name: str) -> tuple[web.AppRunner, int]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=f"{name} would serve {request.path_qs}\n")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner, (_, port) = await serve_app(app, Endpoint(HOST, 0))
    return runner, port


def command(name: str) -> str:
    """How to run console script ``name`` from where the demo was started: its name if
    the shell finds this install's, else its path (a venv not activated:
    ``/home/me/lbmgmt/.venv/bin/lbmgmt``), so that every line printed works as printed,
    from any directory."""
    script = Path(sys.executable).parent / name
    if not script.exists():  # (not installed as a script: the name is all there is)
        return name
    found = shutil.which(name)
    if found is not None and Path(found).resolve() == script.resolve():
        return name
    return str(script.absolute())  # (from any directory: a new terminal opens in ~)


async def run_demo(*, edges: int = 3, http_port: int = 1935, udp_port: int = 1934,
                   mgmt_port: int = 8084, interval_ms: int = 1000, out: TextIO = sys.stdout
                   ) -> None:
    fleet = InProcessFleet(Path(tempfile.mkdtemp(prefix="lbmgmt-demo-")),
                           key=secrets.token_hex(16))
    balancer = await fleet.start_balancer(udp_port=udp_port, http_port=http_port,
                                          mgmt_port=mgmt_port,
                                          message_timeout_ms=interval_ms * 2 + 1000)
    assert balancer.management is not None
    lb = f"http://{HOST}:{fleet.http_port}"
    mgmt = balancer.management.address_text
    rng = random.Random()
    pages: list[web.AppRunner] = []
    lines = []
    try:
        for n in range(1, edges + 1):
            page, port = await _edge_page(f"edge {n}")
            pages.append(page)
            edge = await fleet.add_edge(f"edge{n}", rng.randint(0, 20),
                                        address=f"{HOST}:{port}", interval_ms=interval_ms,
                                        capacity=DEMO_CAPACITY)
            assert edge.management is not None
            lines.append(f"  edge {n:<3}  http://{HOST}:{port}  management "
                         f"{edge.management.address_text}  guid {edge.guid}")
        print(f"lbmgmt demo: a balancer and {edges} edges on {HOST} (Ctrl-C to stop)\n", file=out)
        print(f"  balancer  HTTP {lb}   status reports on UDP {HOST}:{fleet.udp_port}"
              f"   management {mgmt}", file=out)
        print("\n".join(lines), file=out)
        lbmgmt, console = command("lbmgmt"), command("lb-console")
        stop = asyncio.Event()  # (before the lines: one may act on them at once)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"""
Edge loads drift every few seconds; pick a URL and run it a few times:
  curl {lb}/loadbalancer
  curl '{lb}/loadbalancer?serverInfoXML'
  curl -i {lb}/redirect/live/stream.m3u8
  curl -L {lb}/redirect/live/stream.m3u8

Manage it (JSON-RPC 2.0 on the management ports; lb-console attaches there too):
  {lbmgmt} get {mgmt} lbmgmt:type=Balancer
  {lbmgmt} invoke {mgmt} lbmgmt:type=Balancer listServers
  {lbmgmt} call {mgmt} pollNotifications 0 30
  curl -s {mgmt}/metrics
  {console} {mgmt}

In a browser, the status page (drain and undrain edges there): http://{mgmt}/
""", file=out, flush=True)
        while not stop.is_set():
            for edge in fleet.edges:
                drifting = edge.monitor
                assert isinstance(drifting, ManualMonitor)
                drifting.set_load(max(0, drifting.load + rng.randint(-3, 3)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 3.0)
    finally:
        await fleet.stop()
        for page in pages:
            await page.cleanup()
