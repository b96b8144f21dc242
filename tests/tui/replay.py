"""Recorded management answers, replayed, for pixel-stable snapshots of lb-console.

The behaviour tests drive the console against real daemons; snapshots need the
same picture every run, which live daemons (ages, rates, timestamps) cannot
give. ``record()`` asks real in-process daemons every question the console
asks and writes the answers, with the volatile fields pinned, to
tests/data/console-replay.json (run ``python -m tests.tui.replay`` to refresh
it); ``ReplayTarget`` serves them back.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from lbmgmt.management.client import RpcError
from tui.connection import ManagementTarget

FIXTURE = Path(__file__).parents[1] / "data" / "console-replay.json"
PINNED_TIME = 1_795_600_000.0


def _key(method: str, params: Any) -> str:
    return json.dumps([method, params], sort_keys=True)


class ReplayClient:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.polled = False

    async def call(self, method: str, params: Any = None, *, timeout: float | None = None
                   ) -> Any:
        if method == "pollNotifications":
            if self.polled:
                await asyncio.Event().wait()  # a long poll with nothing new, forever
            self.polled = True
            return self.answers[_key("pollNotifications", None)]
        answer = self.answers.get(_key(method, params))
        if answer is None:
            raise RpcError(-32001, "Unknown MBean")
        if isinstance(answer, dict) and "__error__" in answer:
            raise RpcError(**answer["__error__"])
        return answer

    async def batch(self, calls: list[tuple[str, Any]]) -> list[Any]:
        out = []
        for method, params in calls:
            try:
                out.append(await self.call(method, params))
            except RpcError as exc:
                out.append(exc)
        return out

    async def close(self) -> None:
        return None


class ReplayTarget(ManagementTarget):
    def __init__(self, address: str, answers: dict[str, Any]) -> None:
        super().__init__(address)
        self.answers = answers

    def client(self) -> ReplayClient:  # type: ignore[override]
        return ReplayClient(self.answers)


def load() -> dict[str, dict[str, Any]]:
    return json.loads(FIXTURE.read_text())


# The Runtime MBean's figures: the recording process's own, pinned to plausible ones.
RUNTIME = {"Pid": 4242, "CpuPercent": 1.5, "CpuSeconds": 3.2, "Rss": 71_303_168,
           "OpenFileDescriptors": 23, "Tasks": 14, "EventLoop": "uvloop 0.22.1",
           "Python": "CPython 3.11.7", "LoopLag": {"p50": 0.1, "p99": 1.2, "max": 3.4},
           "GcCollections": {"0": 120, "1": 10, "2": 1}, "epoch": "0123456789abcdef"}


def _pin(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in RUNTIME:
                v = RUNTIME[k]
            elif k in ("secondsSinceReport", "SecondsSinceReport"):
                v = 0.4
            elif k in ("timestamp",):
                v = PINNED_TIME
            elif k == "Uptime":
                v = 12.5
            elif k in ("clockOffsetMs", "ClockOffsetMs"):
                v = 3
            elif k in ("firstSecondsAgo", "lastSecondsAgo"):
                v = 2.0
            else:
                v = _pin(v)
            out[k] = v
        return out
    if isinstance(value, list):
        return [_pin(v) for v in value]
    return value


async def record() -> dict[str, dict[str, Any]]:
    from lbmgmt.fleet.inprocess import InProcessFleet
    from lbmgmt.management.client import ManagementClient

    fleet = InProcessFleet(Path(tempfile.mkdtemp()), key="replay")
    balancer = await fleet.start_balancer()
    edges = [await fleet.add_edge(f"e{i}", load, address=f"{name}:1935",
                                  guid=uuid.UUID(int=0x1000 + i))
             for i, (name, load) in enumerate((("edge1.example.net", 12),
                                               ("edge2.example.net", 3),
                                               ("edge3.example.net", 27)))]
    await _until(lambda: len(balancer.core.registry) == 3)
    await edges[2].pause()
    await _until(lambda: balancer.core.registry.get(edges[2].guid).state.name == "PAUSED")
    balancer.core.drain(edges[0].guid, True)
    # an edge that never joins: its targets file has an old key
    from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey
    clocks = balancer.clocks
    balancer.core.receive_datagram(
        ReportSealer(uuid.UUID(int=0x2000)).seal(
            Report(EdgeState.RUNNING, "edge4.example.net:1935", 0, 2500),
            SharedKey("last year's key"), now=clocks.wall()),
        now=clocks.monotonic(), wall=clocks.wall(), source=("192.0.2.7", 40000))
    for _ in range(5):
        fleet.redirect()
    out: dict[str, dict[str, Any]] = {}
    assert balancer.management and edges[1].management
    for label, port in (("balancer", balancer.management.address[1]),
                        ("edge", edges[1].management.address[1])):
        answers: dict[str, Any] = {}
        async with ManagementClient(f"127.0.0.1:{port}") as client:
            async def ask(method: str, params: Any, answers: dict[str, Any] = answers) -> None:
                try:
                    answers[_key(method, params)] = _pin(await client.call(method, params))
                except RpcError as exc:
                    answers[_key(method, params)] = {"__error__": exc.to_json()}
            await ask("version", None)
            names = await client.call("queryNames", ["*:*"])
            await ask("queryNames", ["*:*"])
            for name in names:
                await ask("getMBeanInfo", [name])
                await ask("getAttributes", [name, None])
            if label == "balancer":
                await ask("invoke", ["lbmgmt:type=Balancer", "listServers", []])
                await ask("invoke", ["lbmgmt:type=Balancer", "listDroppedSenders", []])
                await ask("getAttribute", ["lbmgmt:type=Balancer", "ReportsReceived"])
            else:
                await ask("getAttribute", ["lbmgmt:type=Sender", "Load"])
            answers[_key("pollNotifications", None)] = _pin(
                await client.call("pollNotifications", [0, 0]))
        out[label] = answers
    await fleet.stop()
    return out


async def _until(condition: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the fleet did not settle"
        await asyncio.sleep(0.01)


if __name__ == "__main__":
    data = asyncio.run(record())
    FIXTURE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
