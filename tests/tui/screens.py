"""The console's screens, set up on recorded answers: shared by the snapshot tests and
scripts/screenshots.py (which writes the pictures in docs/screenshots)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Static, TabbedContent

from tests.tui.replay import ReplayTarget, load
from tui.app import HelpScreen, LbConsole
from tui.connection import LinkState
from tui.mbeans import MBeanBrowser

SIZE = (132, 34)


def console(kind: str) -> LbConsole:
    data = load()
    port = 8084 if kind == "balancer" else 8085
    return LbConsole([ReplayTarget(f"127.0.0.1:{port}", data[kind])], interval=3600)


async def until(pilot: Pilot[Any], condition: Callable[[], object], what: str) -> None:
    """Wait (a hang guard, not a bound) until ``condition`` holds, then for the screen."""
    for _ in range(1500):
        if condition():
            await pilot.pause()
            return
        await pilot.pause(0.02)
    raise AssertionError(f"{what}: not reached")


async def _connected(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, LbConsole)
    await until(pilot, lambda: app.current.state is LinkState.CONNECTED
                and app.current.overview, "connected")
    status = app.query_one("#status", Static)
    await until(pilot, lambda: "readwrite" in str(status.render()), "the status line drawn")


async def _tab(pilot: Pilot[Any], key: str, tab: str) -> None:
    await pilot.press(key)
    tabs = pilot.app.query_one(TabbedContent)
    await until(pilot, lambda: tabs.active == tab, f"tab {tab}")


async def overview(pilot: Pilot[Any]) -> None:
    await _connected(pilot)


async def mbeans(pilot: Pilot[Any]) -> None:
    await _connected(pilot)
    await _tab(pilot, "2", "mbeans")
    app = pilot.app
    browser = app.query_one(MBeanBrowser)
    await until(pilot, lambda: browser._tree_nodes, "the MBean tree")
    app.open_mbean("lbmgmt:type=Balancer")  # type: ignore[attr-defined]
    await until(pilot, lambda: browser.values, "the Balancer's attributes")
    browser.select_name("lbmgmt:type=Balancer")
    await pilot.pause()


async def charts(pilot: Pilot[Any]) -> None:
    await mbeans(pilot)
    app = pilot.app
    assert isinstance(app, LbConsole)
    app.current.watched.append(("lbmgmt:type=Balancer", "ReportsReceived"))
    await app.current.refresh()
    app.query_one("Charts").show(app.current)  # type: ignore[attr-defined]
    await _tab(pilot, "3", "charts")
    app.query_one("Charts").show(app.current)  # type: ignore[attr-defined]
    await pilot.pause()


async def notifications(pilot: Pilot[Any]) -> None:
    await _connected(pilot)
    await _tab(pilot, "4", "notifications")


async def help_screen(pilot: Pilot[Any]) -> None:
    await _connected(pilot)
    await pilot.press("question_mark")
    await until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), "the help screen")


SCREENS: dict[str, tuple[str, Callable[[Pilot[Any]], Awaitable[None]]]] = {
    "overview-balancer": ("balancer", overview),
    "overview-edge": ("edge", overview),
    "mbeans": ("balancer", mbeans),
    "charts": ("balancer", charts),
    "notifications": ("balancer", notifications),
    "help": ("balancer", help_screen),
}
