"""lb-console driven with Textual's pilot against real daemons running in the same loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static, TabbedContent, Tree

from lbmgmt.fleet.inprocess import InProcessFleet
from lbmgmt.fleet.ports import HOST, free_port
from lbmgmt.management.auth import Credentials, User, hash_password
from lbmgmt.management.server import Role
from lbmgmt.status import EdgeState
from tui.app import HelpScreen, LbConsole
from tui.connection import LinkState, ManagementTarget
from tui.forms import ConfirmScreen, FormScreen
from tui.mbeans import MBeanBrowser
from tui.overview import Overview


class Daemons(InProcessFleet):
    """The fleet a console attaches to, with a management port kept across restarts."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, key="console-tests")
        self.port = free_port()

    async def start(self, credentials: Credentials | None = None):
        return await self.start_balancer(mgmt_port=self.port, message_timeout_ms=3000,
                                         credentials=credentials)

    async def edge(self, name: str, load: float):
        return await self.add_edge(name, load, interval_ms=200)


async def until(pilot, condition, timeout: float = 30.0, what: str = "condition") -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"{what} not reached in {timeout}s")


def rows(app: LbConsole) -> list[list[str]]:
    table = app.query_one("#servers", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def status(app: LbConsole) -> str:
    return str(app.query_one("#status", Static).render())


async def test_attach_and_see_the_edges_appear(daemons):
    app = LbConsole([ManagementTarget(f"{HOST}:{daemons.port}")], interval=0.25)
    async with app.run_test(size=(140, 40)) as pilot:
        await daemons.edge("light", 1)
        await daemons.edge("heavy", 40)
        await until(pilot, lambda: len(rows(app)) == 2, what="two edges in the table")
        assert "balancer readwrite" in status(app)
        table = rows(app)
        assert [r[0] for r in table] == ["light.example:1935", "heavy.example:1935"]  # by load
        assert table[1][5].endswith("40") and "█" in table[1][5]  # a load bar
        app.query_one(Overview).sort_by("load")  # the same column again: descending
        app.query_one(Overview).show(app.current)
        assert rows(app)[0][0] == "heavy.example:1935"
        totals = str(app.query_one("#totals", Static).render())
        assert "2 servers, 2 available" in totals and "reports/s" in totals


async def test_pause_an_edge_from_the_console_and_it_leaves_the_pool(daemons):
    edge = await daemons.edge("target", 0)
    other = await daemons.edge("other", 50)
    assert edge.management and edge.management.address
    app = LbConsole([ManagementTarget(f"{HOST}:{daemons.port}"),
                     ManagementTarget(f"{HOST}:{edge.management.address[1]}")], interval=0.25)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: all(c.state is LinkState.CONNECTED for c in app.connections))
        await until(pilot, lambda: len(rows(app)) == 2)
        balancer = daemons.balancer
        assert daemons.redirect() == "target.example:1935"
        # the selected row is the lightest edge, "target"; p pauses it through its own port
        await until(pilot, lambda: app.query_one(Overview).selected_guid() == str(edge.guid))
        await until(pilot, lambda: app.connections[1].overview.get("ServerId") == str(edge.guid))
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("y")
        await until(pilot, lambda: edge.state is EdgeState.PAUSED, what="edge paused")
        await until(pilot, lambda: balancer.core.registry.get(edge.guid).state is EdgeState.PAUSED)
        assert {daemons.redirect() for _ in range(5)} == {"other.example:1935"}
        await until(pilot, lambda: "PAUSED" in " ".join(rows(app)[0] + rows(app)[1]))
        assert other.state is EdgeState.RUNNING


async def open_balancer_mbean(app: LbConsole, pilot) -> MBeanBrowser:
    """MBeans tab, the Balancer MBean chosen in the tree with the keyboard."""
    await until(pilot, lambda: app.current.state is LinkState.CONNECTED)
    await pilot.press("2")
    browser = app.query_one(MBeanBrowser)
    await until(pilot, lambda: "lbmgmt:type=Balancer" in browser._tree_nodes)
    browser.select_name("lbmgmt:type=Balancer")
    app.query_one(Tree).focus()
    await pilot.press("enter")
    await until(pilot, lambda: browser.info is not None and browser.values)
    return browser


async def test_edit_a_writable_attribute_with_type_checking(daemons):
    app = LbConsole([ManagementTarget(f"{HOST}:{daemons.port}")], interval=0.25)
    async with app.run_test(size=(140, 40)) as pilot:
        browser = await open_balancer_mbean(app, pilot)
        table = browser.query_one("#attributes", DataTable)
        table.focus()
        table.move_cursor(row=table.get_row_index("MessageTimeout"))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, FormScreen), what="the edit form")
        field = app.screen.query_one("#value", Input)
        field.value = "soon"
        await pilot.press("enter")
        await until(pilot, lambda: "not an integer" in str(
            app.screen.query_one("#error", Static).render()), what="the type error shown")
        field.value = "4321"
        await pilot.press("enter")
        await until(pilot, lambda: daemons.balancer.core.registry.timeout == 4.321,
                    what="MessageTimeout set on the daemon")
        await until(pilot, lambda: "MessageTimeout = 4321" in str(
            browser.query_one("#result", Static).render()))


async def test_invoke_with_bad_parameters_shows_the_error(daemons):
    app = LbConsole([ManagementTarget(f"{HOST}:{daemons.port}")], interval=0.25)
    async with app.run_test(size=(140, 40)) as pilot:
        browser = await open_balancer_mbean(app, pilot)
        ops = browser.query_one("#operations", DataTable)
        ops.focus()
        ops.move_cursor(row=ops.get_row_index("drainServer"))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, FormScreen), what="the invoke form")
        app.screen.query_one("#p0", Input).value = "not-a-guid"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("y")  # an ACTION operation: confirmed first
        await until(pilot, lambda: "Operation failed" in str(
            browser.query_one("#result", Static).render()), what="the daemon's error shown")
        assert "not a GUID" in str(browser.query_one("#result", Static).render())


async def test_lose_the_daemon_and_reconnect(daemons):
    app = LbConsole([ManagementTarget(f"{HOST}:{daemons.port}")], interval=0.25)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.current.state is LinkState.CONNECTED)
        pulse = daemons.balancer.management.pulse
        await until(pilot, lambda: len(pulse.parked) == 1, what="the console's long poll parked")
        await daemons.edge("before", 1)  # some events: the sequence is past a few
        await daemons.edge("before2", 1)
        await until(pilot, lambda: sum(n["type"] == "lbmgmt.server.joined"
                                       for n in app.current.notifications) == 2,
                    what="the first daemon's notifications seen")
        await daemons.stop()
        await until(pilot, lambda: app.current.state is LinkState.LOST, what="loss noticed")
        await until(pilot, lambda: "lost" in status(app) and "retry in" in status(app),
                    what="the loss in the status line")
        await pilot.press("2")  # still answering keys while the daemon is gone
        await until(pilot, lambda: app.query_one(TabbedContent).active == "mbeans")
        await daemons.start()  # same management port
        await until(pilot, lambda: app.current.state is LinkState.CONNECTED,
                    what="reconnected")
        await until(pilot, lambda: "balancer readwrite" in status(app),
                    what="the reconnection in the status line")
        # events from the restarted daemon (its sequence numbers start again) still arrive
        pulse = daemons.balancer.management.pulse
        await until(pilot, lambda: len(pulse.parked) == 1, what="the console polling again")
        await daemons.edge("after-restart", 1)
        await until(pilot, lambda: any(n["type"] == "lbmgmt.server.joined"
                                       and "after-restart" in n["message"]
                                       for n in app.current.notifications),
                    what="notification from the restarted daemon")


async def test_readonly_user_sees_controls_disabled(tmp_path):
    d = Daemons(tmp_path)
    await d.start(Credentials([User("viewer", Role.READONLY, hash_password("pw"))]))
    try:
        await d.edge("e", 1)
        app = LbConsole([ManagementTarget(f"{HOST}:{d.port}", user="viewer", password="pw")],
                        interval=0.25)
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: len(rows(app)) == 1)
            assert "balancer readonly" in status(app)
            assert app.check_action("drain", ()) is None  # dimmed in the footer
            await pilot.press("d")  # disabled: no confirmation, nothing drained
            assert not isinstance(app.screen, ConfirmScreen)
            assert not d.balancer.core.registry.drained
            app.open_mbean("lbmgmt:type=Balancer")
            browser = app.query_one(MBeanBrowser)
            await until(pilot, lambda: browser.info is not None and browser.values)
            title = str(browser.query_one("#mbean-title", Static).render())
            assert "readonly" in title and "disabled" in title
            ops = browser.query_one("#operations", DataTable)
            assert "disabled: your role is readonly" in str(
                ops.get_row("drainServer")[3])
    finally:
        await d.stop()


async def test_wrong_password_and_unreachable_host_are_clear_messages(daemons):
    creds = Credentials([User("ops", Role.READWRITE, hash_password("right"))])
    guarded = Daemons(daemons.workdir)
    await guarded.start(creds)
    try:
        app = LbConsole([ManagementTarget(f"{HOST}:{guarded.port}", user="ops", password="wrong"),
                         ManagementTarget(f"{HOST}:{free_port()}")], interval=0.25)
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: app.connections[0].state is LinkState.REFUSED)
            await until(pilot, lambda: app.connections[1].state is LinkState.LOST)
            await until(pilot, lambda: "login required or refused" in status(app)
                        and "cannot connect" in status(app), what="both reasons shown")
    finally:
        await guarded.stop()


def test_command_line_errors(tmp_path, capsys):
    from tui.app import parse_args
    with pytest.raises(SystemExit):
        parse_args(["127.0.0.1:8084", "--password-file", str(tmp_path / "nope")])
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "pw").write_text("secret\n")
    with pytest.raises(SystemExit):
        parse_args(["127.0.0.1:8084", "--password-file", str(tmp_path / "pw")])
    assert "needs --user" in capsys.readouterr().err
    targets, interval = parse_args(["a:1", "b:2", "-u", "ops", "--password-file",
                                    str(tmp_path / "pw"), "--interval", "0.1"])
    assert [t.address for t in targets] == ["a:1", "b:2"] and targets[0].password == "secret"
    assert interval == 0.25


async def test_console_keeps_answering_while_a_daemon_hangs():
    """A daemon that accepts and never answers must not freeze the screen.

    How fast the keys are answered meanwhile is measured by ``python -m bench.console``.
    """
    server = await asyncio.start_server(lambda r, w: None, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        app = LbConsole([ManagementTarget(f"{HOST}:{port}")], interval=0.25)
        async with app.run_test(size=(120, 30)) as pilot:
            tabs = app.query_one(TabbedContent)
            for key, tab in (("2", "mbeans"), ("3", "charts"), ("4", "notifications"),
                             ("1", "overview")):
                await pilot.press(key)
                await until(pilot, lambda tab=tab: tabs.active == tab, what=f"tab {tab}")
            await pilot.press("question_mark")
            await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, HelpScreen))
            assert app.current.state is LinkState.CONNECTING  # still waiting on the daemon
    finally:
        server.close()
