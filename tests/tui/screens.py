"""The console's screens, set up on recorded answers: shared by the snapshot tests and
scripts/screenshots.py (which writes the pictures in docs/screenshots)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot

from tests.tui.replay import ReplayTarget, load
from tui.app import LbConsole
from tui.connection import LinkState
from tui.mbeans import MBeanBrowser

SIZE = (132, 34)


def console(kind: str) -> LbConsole:
    data = load()
    port = 8084 if kind == "balancer" else 8085
    return LbConsole([ReplayTarget(f"127.0.0.1:{port}", data[kind])], interval=3600)


async def _connected(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, LbConsole)
    for _ in range(200):
        if app.current.state is LinkState.CONNECTED and app.current.overview:
            break
        await pilot.pause(0.02)
    await pilot.pause(0.6)  # the status line redraws twice a second


async def overview(pilot: Pilot[Any]) -> None:
    await _connected(pilot)


async def mbeans(pilot: Pilot[Any]) -> None:
    await _connected(pilot)
    await pilot.press("2")
    app = pilot.app
    browser = app.query_one(MBeanBrowser)
    for _ in range(100):
        if browser._tree_nodes:
            break
        await pilot.pause(0.02)
    app.open_mbean("lbmgmt:type=Balancer")  # type: ignore[attr-defined]
    for _ in range(100):
        if browser.values:
            break
        await pilot.pause(0.02)
    browser.select_name("lbmgmt:type=Balancer")
    await pilot.pause(0.3)


async def charts(pilot: Pilot[Any]) -> None:
    await mbeans(pilot)
    app = pilot.app
    assert isinstance(app, LbConsole)
    app.current.watched.append(("lbmgmt:type=Balancer", "ReportsReceived"))
    await app.current.refresh()
    app.query_one("Charts").show(app.current)  # type: ignore[attr-defined]
    await pilot.press("3")
    await pilot.pause(0.3)
    app.query_one("Charts").show(app.current)  # type: ignore[attr-defined]
    await pilot.pause(0.3)


async def notifications(pilot: Pilot[Any]) -> None:
    await _connected(pilot)
    await pilot.press("4")
    await pilot.pause(0.3)


async def help_screen(pilot: Pilot[Any]) -> None:
    await _connected(pilot)
    await pilot.press("question_mark")
    await pilot.pause(0.3)


SCREENS: dict[str, tuple[str, Callable[[Pilot[Any]], Awaitable[None]]]] = {
    "overview-balancer": ("balancer", overview),
    "overview-edge": ("edge", overview),
    "mbeans": ("balancer", mbeans),
    "charts": ("balancer", charts),
    "notifications": ("balancer", notifications),
    "help": ("balancer", help_screen),
}
