"""lb-console driven with Textual's pilot against real daemons running in the same loop."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static, Tree

from lbmgmt.balancer.config import BalancerConfig, HttpConfig
from lbmgmt.balancer.daemon import BalancerDaemon
from lbmgmt.edge.config import EdgeConfig
from lbmgmt.edge.daemon import EdgeDaemon
from lbmgmt.edge.monitors import ManualMonitor
from lbmgmt.edge.targets import Target as EdgeTarget
from lbmgmt.endpoints import Endpoint
from lbmgmt.management.auth import Credentials, User, hash_password
from lbmgmt.management.config import ManagementConfig
from lbmgmt.management.server import Role
from lbmgmt.status import EdgeState, SharedKey
from tui.app import LbConsole
from tui.connection import LinkState, Target
from tui.mbeans import MBeanBrowser
from tui.overview import Overview

KEY = SharedKey("console-tests")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Daemons:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.balancer: BalancerDaemon | None = None
        self.edges: list[EdgeDaemon] = []
        self.mgmt_port = free_port()

    async def start_balancer(self, credentials: Credentials | None = None) -> BalancerDaemon:
        self.balancer = BalancerDaemon(BalancerConfig(
            key=KEY, listen=Endpoint(HOST, 0), message_timeout_ms=3000,
            http=HttpConfig(listen=Endpoint(HOST, 0)),
            management=ManagementConfig(Endpoint(HOST, self.mgmt_port),
                                        credentials=credentials)))
        await self.balancer.start()
        return self.balancer

    async def add_edge(self, name: str, load: float) -> EdgeDaemon:
        assert self.balancer is not None and self.balancer.udp_address
        edge = EdgeDaemon(EdgeConfig(
            redirect_address=f"{name}.example:1935", targets_file=self.tmp / "unused",
            guid_file=self.tmp / f"{name}.guid", message_interval_ms=200,
            monitor=ManualMonitor(load), management=ManagementConfig(Endpoint(HOST, 0))),
            targets=[EdgeTarget(HOST, self.balancer.udp_address[1], KEY, 1)])
        await edge.start()
        self.edges.append(edge)
        return edge

    async def stop(self) -> None:
        for edge in self.edges:
            await edge.stop()
        if self.balancer is not None:
            await self.balancer.stop()


@pytest.fixture
async def daemons(tmp_path):
    d = Daemons(tmp_path)
    await d.start_balancer()
    yield d
    await d.stop()


async def until(pilot, condition, timeout: float = 10.0, what: str = "condition") -> None:
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
    app = LbConsole([Target(f"{HOST}:{daemons.mgmt_port}")], interval=0.25)
    async with app.run_test(size=(140, 40)) as pilot:
        await daemons.add_edge("light", 1)
        await daemons.add_edge("heavy", 40)
        await until(pilot, lambda: len(rows(app)) == 2, what="two edges in the table")
        assert "balancer readwrite" in status(app)
        table = rows(app)
        assert [r[0] for r in table] == ["light.example:1935", "heavy.example:1935"]  # by load
        assert table[1][4].endswith("40") and "█" in table[1][4]  # a load bar
        app.query_one(Overview).sort_by("load")  # the same column again: descending
        app.query_one(Overview).show(app.current)
        assert rows(app)[0][0] == "heavy.example:1935"
        totals = str(app.query_one("#totals", Static).render())
        assert "2 servers, 2 available" in totals and "reports/s" in totals


async def test_pause_an_edge_from_the_console_and_it_leaves_the_pool(daemons):
    edge = await daemons.add_edge("target", 0)
    other = await daemons.add_edge("other", 50)
    assert edge.management and edge.management.address
    app = LbConsole([Target(f"{HOST}:{daemons.mgmt_port}"),
                     Target(f"{HOST}:{edge.management.address[1]}")], interval=0.25)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: all(c.state is LinkState.CONNECTED for c in app.connections))
        await until(pilot, lambda: len(rows(app)) == 2)
        balancer = daemons.balancer
        assert balancer.redirect("http").address == "target.example:1935"
        # the selected row is the lightest edge, "target"; p pauses it through its own port
        await until(pilot, lambda: app.query_one(Overview).selected_guid() == str(edge.guid))
        await until(pilot, lambda: app.connections[1].overview.get("ServerId") == str(edge.guid))
        await pilot.press("p")
        await pilot.pause(0.2)
        await pilot.press("y")
        await until(pilot, lambda: edge.state is EdgeState.PAUSED, what="edge paused")
        await until(pilot, lambda: balancer.registry.get(edge.guid).state is EdgeState.PAUSED)
        assert {balancer.redirect("http").address for _ in range(5)} == {"other.example:1935"}
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
    app = LbConsole([Target(f"{HOST}:{daemons.mgmt_port}")], interval=0.25)
    async with app.run_test(size=(140, 40)) as pilot:
        browser = await open_balancer_mbean(app, pilot)
        table = browser.query_one("#attributes", DataTable)
        table.focus()
        table.move_cursor(row=table.get_row_index("MessageTimeout"))
        await pilot.press("enter")
        await pilot.pause(0.2)
        field = app.screen.query_one("#value", Input)
        field.value = "soon"
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert "not an integer" in str(app.screen.query_one("#error", Static).render())
        field.value = "4321"
        await pilot.press("enter")
        await until(pilot, lambda: daemons.balancer.registry.timeout == 4.321,
                    what="MessageTimeout set on the daemon")
        await until(pilot, lambda: "MessageTimeout = 4321" in str(
            browser.query_one("#result", Static).render()))


async def test_invoke_with_bad_parameters_shows_the_error(daemons):
    app = LbConsole([Target(f"{HOST}:{daemons.mgmt_port}")], interval=0.25)
    async with app.run_test(size=(140, 40)) as pilot:
        browser = await open_balancer_mbean(app, pilot)
        ops = browser.query_one("#operations", DataTable)
        ops.focus()
        ops.move_cursor(row=ops.get_row_index("drainServer"))
        await pilot.press("enter")
        await pilot.pause(0.2)
        app.screen.query_one("#p0", Input).value = "not-a-guid"
        await pilot.press("enter")
        await pilot.pause(0.2)
        await pilot.press("y")  # an ACTION operation: confirmed first
        await until(pilot, lambda: "Operation failed" in str(
            browser.query_one("#result", Static).render()), what="the daemon's error shown")
        assert "not a GUID" in str(browser.query_one("#result", Static).render())


async def test_lose_the_daemon_and_reconnect(daemons):
    await daemons.add_edge("before", 1)  # some events: the sequence is past a few
    await daemons.add_edge("before2", 1)
    app = LbConsole([Target(f"{HOST}:{daemons.mgmt_port}")], interval=0.25)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.current.state is LinkState.CONNECTED)
        await pilot.pause(0.5)
        for edge in daemons.edges:
            await edge.stop()
        daemons.edges.clear()
        await daemons.balancer.stop()
        await until(pilot, lambda: app.current.state is LinkState.LOST, what="loss noticed")
        await pilot.pause(0.6)  # the status line is redrawn twice a second
        assert "lost" in status(app) and "retry in" in status(app)
        await pilot.press("1")  # still answering keys while the daemon is gone
        await daemons.start_balancer()  # same management port
        await until(pilot, lambda: app.current.state is LinkState.CONNECTED, timeout=15,
                    what="reconnected")
        await pilot.pause(0.6)
        assert "balancer readwrite" in status(app)
        # events from the restarted daemon (its sequence numbers start again) still arrive
        await daemons.add_edge("after-restart", 1)
        await until(pilot, lambda: any(n["type"] == "lbmgmt.server.joined"
                                       and "after-restart" in n["message"]
                                       for n in app.current.notifications),
                    what="notification from the restarted daemon")


async def test_readonly_user_sees_controls_disabled(tmp_path):
    d = Daemons(tmp_path)
    await d.start_balancer(Credentials([User("viewer", Role.READONLY, hash_password("pw"))]))
    try:
        await d.add_edge("e", 1)
        app = LbConsole([Target(f"{HOST}:{d.mgmt_port}", user="viewer", password="pw")],
                        interval=0.25)
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: len(rows(app)) == 1)
            assert "balancer readonly" in status(app)
            assert app.check_action("drain", ()) is None  # dimmed in the footer
            await pilot.press("d")
            await pilot.pause(0.2)
            assert not d.balancer.registry.drained
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
    guarded = Daemons(daemons.tmp)
    await guarded.start_balancer(creds)
    try:
        app = LbConsole([Target(f"{HOST}:{guarded.mgmt_port}", user="ops", password="wrong"),
                         Target(f"{HOST}:{free_port()}")], interval=0.25)
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: app.connections[0].state is LinkState.REFUSED)
            await until(pilot, lambda: app.connections[1].state is LinkState.LOST)
            await pilot.pause(0.6)
            text = status(app)
            assert "login required or refused" in text and "cannot connect" in text
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
    """A daemon that accepts and never answers must not freeze the screen."""
    server = await asyncio.start_server(lambda r, w: None, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        app = LbConsole([Target(f"{HOST}:{port}")], interval=0.25)
        async with app.run_test(size=(120, 30)) as pilot:
            loop = asyncio.get_running_loop()
            for key in ("2", "3", "4", "1", "question_mark", "escape"):
                t0 = loop.time()
                await pilot.press(key)
                assert loop.time() - t0 < 0.5
            assert app.current.state is LinkState.CONNECTING
    finally:
        server.close()
