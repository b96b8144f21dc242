"""Real daemon processes on loopback for end-to-end tests, observed from outside.

The processes come from ``lbmgmt.fleet.processes`` (the harness the benchmarks
use too); this adds what the tests observe over HTTP, and ``wait_until``.
Intervals are short (200 ms reports, 1 s timeout) so the suite stays quick.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from lbmgmt.fleet.ports import HOST, free_port
from lbmgmt.fleet.processes import BalancerProcess as Balancer
from lbmgmt.fleet.processes import EdgeProcess as Edge
from lbmgmt.fleet.processes import ProcessFleet

# What "eventually" means in these tests: far longer than anything should take on a
# busy machine, so only a real failure reaches it.
DEADLINE = 30.0


@dataclass
class Fleet(ProcessFleet):
    session: aiohttp.ClientSession | None = None
    interval_ms: int = 200
    timeout_ms: int = 1000
    key: str = "e2e-shared-key-0123"

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self.session is not None
        return self.session

    async def servers(self, balancer: Balancer) -> dict[str, dict[str, str]]:
        """serverInfoXML as {redirect address: {field: text}}; {} if not answering."""
        root = await self.server_info(balancer)
        if root is None:
            return {}
        return {s.findtext("redirect") or "": {c.tag: c.text or "" for c in s}
                for s in root.iter("Server")}

    async def server_info(self, balancer: Balancer) -> ET.Element | None:
        try:
            async with self.http.get(f"{balancer.url}/loadbalancer?serverInfoXML") as r:
                return ET.fromstring(await r.read()) if r.status == 200 else None
        except aiohttp.ClientError:
            return None

    async def redirect(self, balancer: Balancer) -> str | None:
        async with self.http.get(f"{balancer.url}/loadbalancer") as r:
            text = await r.text()
            return text.removeprefix("redirect=") if r.status == 200 else None


async def wait_until(predicate: Callable[[], Awaitable[object]], timeout: float = DEADLINE, *,
                     interval: float = 0.02, what: str = "condition") -> None:
    """Poll an async predicate until it is true; fail after ``timeout`` (a hang guard only)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        await asyncio.sleep(interval)


async def wait_for_text(path: Path, text: str, timeout: float = DEADLINE) -> None:
    """Until ``text`` appears in the file (a daemon's log, say)."""
    async def there() -> bool:
        return path.exists() and text in path.read_text(errors="replace")
    await wait_until(there, timeout, what=f"{text!r} in {path.name}")


__all__ = ["DEADLINE", "HOST", "Balancer", "Edge", "Fleet", "free_port", "wait_for_text",
           "wait_until"]
