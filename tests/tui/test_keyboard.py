"""lb-console driven by keys alone, as an operator without a mouse drives it.

Each test presses keys (no widget is focused or set by the test itself) against
real in-process daemons and checks what the screen and the daemons did.
"""

from __future__ import annotations

from textual.command import CommandPalette
from textual.widgets import DataTable, Input, RichLog, Static, Tree

from lbmgmt.fleet.ports import HOST
from lbmgmt.management.objectname import ObjectName
from lbmgmt.management.server import Role
from tests.tui.test_console import Daemons, rows, until
from tui.app import LbConsole
from tui.charts import Charts
from tui.connection import LinkState, ManagementTarget
from tui.forms import ConfirmScreen, EditScreen
from tui.mbeans import MBeanBrowser
from tui.overview import Overview


def console(d: Daemons, *more: ManagementTarget) -> LbConsole:
    return LbConsole([ManagementTarget(f"{HOST}:{d.port}"), *more], interval=0.25)


def text(app: LbConsole, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


async def open_balancer_by_keys(app: LbConsole, pilot) -> MBeanBrowser:
    """From the MBeans tab's tree (focused by "2"), down to the Balancer MBean and enter:
    keys only, as test_console's open_balancer_mbean is not."""
    browser = app.query_one(MBeanBrowser)
    await until(pilot, lambda: "lbmgmt:type=Balancer" in browser._tree_nodes)
    for _ in range(20):
        if app.query_one(Tree).cursor_node.data == "lbmgmt:type=Balancer":
            break
        await pilot.press("down")
    await pilot.press("enter")
    await until(pilot, lambda: browser.selected == "lbmgmt:type=Balancer" and browser.values,
                what="the Balancer MBean opened by enter")
    return browser


async def test_number_keys_move_focus_into_each_tab_and_tab_cycles_inside(daemons):
    app = console(daemons)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.current.state is LinkState.CONNECTED)
        await pilot.press("2")
        assert app.focused is app.query_one("#tree", Tree)
        browser = await open_balancer_by_keys(app, pilot)  # (the bug: enter opened nothing)
        await pilot.press("tab")
        assert app.focused is browser.query_one("#attributes", DataTable)
        await pilot.press("tab")
        assert app.focused is browser.query_one("#operations", DataTable)
        await pilot.press("shift+tab", "shift+tab")
        assert app.focused is app.query_one("#tree", Tree)
        await pilot.press("3")
        assert app.focused is app.query_one(Charts)
        await pilot.press("4")
        assert app.focused is app.query_one("#log", RichLog)
        await pilot.press("slash")  # the type filter
        assert app.focused is app.query_one("#filter", Input)
        await pilot.press("escape")  # out of the filter, back to the events
        assert app.focused is app.query_one("#log", RichLog)
        await pilot.press("1")
        assert app.focused is app.query_one("#servers", DataTable)


async def test_typing_into_a_text_field_runs_no_action(daemons):
    edge = await daemons.edge("e", 1)
    app = console(daemons)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 1)
        await pilot.press("4", "slash", *"drained", "1", "2", "q", "s", "p", "question_mark")
        assert app.query_one("#filter", Input).value == "drained12qsp?"
        assert app.is_running and not isinstance(app.screen, ConfirmScreen)  # the bug: d
        assert not daemons.balancer.core.registry.drained                  # asked to drain
        assert edge.state.name == "RUNNING"
        await pilot.press("escape", "1")  # out of the field, keys are actions again
        assert app.query_one("TabbedContent").active == "overview"


async def test_drain_confirmation_names_the_edges_address_and_drains_it(daemons):
    edge = await daemons.edge("named", 1)
    app = console(daemons)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 1)
        await pilot.press("1", "d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        assert "Drain named.example:1935 on 127.0.0.1:" in app.screen.question
        await pilot.press("y")
        await until(pilot, lambda: edge.guid in daemons.balancer.core.registry.drained,
                    what="drained on the balancer")


async def test_palette_actions_confirm_as_keys_do(daemons):
    app = console(daemons)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: app.current.state is LinkState.CONNECTED)
        await until(pilot, lambda: app.current.overview.get("Redirector"))
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), what="the palette")
        await pilot.press(*"redirector to p2c", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        assert "from concurrent-connects to p2c" in app.screen.question
        await pilot.press("n")
        assert daemons.balancer.core.redirector.name == "concurrent-connects"
        await pilot.press("ctrl+p", *"redirector to p2c", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("y")
        await until(pilot, lambda: daemons.balancer.core.redirector.name == "p2c",
                    what="the redirector switched")


async def test_a_rejected_edit_keeps_the_form_open_with_the_daemons_error(daemons):
    await daemons.edge("e", 1)
    app = console(daemons)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: app.current.state is LinkState.CONNECTED)
        await pilot.press("2")
        browser = await open_balancer_by_keys(app, pilot)
        await pilot.press("tab")  # into the attributes, down to MessageTimeout
        table = browser.query_one("#attributes", DataTable)
        for _ in range(60):
            if table.coordinate_to_cell_key(table.cursor_coordinate)[0].value == "MessageTimeout":
                break
            await pilot.press("down")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, EditScreen), what="the edit form")
        await pilot.press(*["backspace"] * 10, "5", "enter")  # 5 ms: under its minimum
        await until(pilot, lambda: "refused" in text(app.screen, "#error"),
                    what="the daemon's refusal on the form")
        assert isinstance(app.screen, EditScreen)  # still open: the bug closed it
        assert "at least" in text(app.screen, "#error") or "10 to" in text(app.screen, "#error")
        await pilot.press("d", "p")  # typed into the form, not drain or pause
        assert app.screen.query_one("#value", Input).value == "5dp"
        assert not daemons.balancer.core.registry.drained
        await pilot.press(*["backspace"] * 3, *"4321", "enter")
        await until(pilot, lambda: daemons.balancer.core.registry.timeout == 4.321,
                    what="set once corrected")
        await until(pilot, lambda: not isinstance(app.screen, EditScreen))


async def test_switching_connection_refreshes_every_pane(daemons):
    edge = await daemons.edge("e", 1)
    assert edge.management and edge.management.address
    app = console(daemons, ManagementTarget(f"{HOST}:{edge.management.address[1]}"))
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: all(c.state is LinkState.CONNECTED for c in app.connections))
        await pilot.press("2")
        browser = await open_balancer_by_keys(app, pilot)
        await pilot.press("c")  # to the edge: no balancer tree or details beside its own
        assert browser.selected is None and browser.query_one("#attributes", DataTable
                                                              ).row_count == 0
        assert "select an MBean" in text(app, "#mbean-title")
        await until(pilot, lambda: "lbmgmt:type=Sender" in browser._tree_nodes,
                    what="the edge's own tree")
        assert "lbmgmt:type=Balancer" not in browser._tree_nodes
        await pilot.press("1")
        await until(pilot, lambda: "edge e.example:1935" in text(app, "#totals"))


async def test_slash_filters_the_edges_and_s_reverses_then_moves_on(daemons):
    await daemons.edge("light", 1)
    await daemons.edge("heavy", 40)
    app = console(daemons)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 2)
        overview = app.query_one(Overview)
        table = app.query_one("#servers", DataTable)
        assert str(table.columns["load"].label) == "Load ▲"
        await pilot.press("s")  # the same column, the other way: heaviest first
        assert overview.sort_reverse and str(table.columns["load"].label) == "Load ▼"
        assert [r[0] for r in rows(app)] == ["heavy.example:1935", "light.example:1935"]
        await pilot.press("s")  # then the next column, ascending
        assert overview.sort_column == "redirects" and not overview.sort_reverse
        await pilot.press("slash")
        assert app.focused is app.query_one("#server-filter", Input)
        await pilot.press(*"heav")
        await until(pilot, lambda: [r[0] for r in rows(app)] == ["heavy.example:1935"],
                    what="filtered to one edge")
        assert "filter: heav" in text(app, "#totals")
        await pilot.press("escape")
        await until(pilot, lambda: len(rows(app)) == 2, what="the filter cleared")
        assert app.focused is table


async def test_load_bars_are_against_capacity_when_reported(daemons):
    app = console(daemons)
    async with app.run_test(size=(160, 40)) as pilot:
        daemons.report("cap.example:1935", 25, capacity=100, interval_ms=60_000)
        await until(pilot, lambda: len(rows(app)) == 1)
        load = rows(app)[0][5]
        assert load.endswith("25/100") and load.count("█") == 2  # a quarter of 8


async def test_attribute_changes_show_old_and_new_values(daemons):
    app = console(daemons)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: app.current.state is LinkState.CONNECTED)
        await pilot.press("4")
        daemons.balancer.mbeans.set_attribute(ObjectName.parse("lbmgmt:type=Balancer"),
                                              "Grace", 501, Role.READWRITE)
        log = app.query_one("#log", RichLog)
        await until(pilot, lambda: any("Grace: 500 → 501" in str(strip.text)
                                       for strip in log.lines), what="old → new in the log")


async def test_a_lost_connection_greys_its_values_and_says_their_age(daemons):
    await daemons.edge("e", 1)
    app = console(daemons)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: len(rows(app)) == 1)
        await daemons.stop_balancer()
        await until(pilot, lambda: app.current.state is LinkState.LOST, what="the loss seen")
        overview = app.query_one(Overview)
        await until(pilot, lambda: overview.has_class("stale")
                    and "STALE: values from" in text(app, "#totals"), what="greyed, aged")
        assert len(rows(app)) == 1  # the last values stay, marked
