"""lb-console: attach to lbmgmt daemons' management ports and see and steer them.

Every call to a daemon runs in a worker or a background task, so nothing the
daemon does (slow, gone, refusing) can freeze the screen; each connection
reconnects by itself with backoff and says so in the header.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Markdown, Static, TabbedContent, TabPane, Tree

from lbmgmt import __version__
from lbmgmt.balancer.redirectors import BUILTIN_REDIRECTORS
from lbmgmt.management.client import ManagementUnavailable, RpcError
from tui.charts import MAX_CHARTS, Charts
from tui.connection import BALANCER, SENDER, Connection, LinkState, ManagementTarget
from tui.forms import ConfirmScreen, EditScreen, InvokeScreen
from tui.mbeans import READONLY_REASON, MBeanBrowser
from tui.notifications import Notifications
from tui.overview import Overview
from tui.typed_input import format_value

HELP = """\
# lb-console

| key | does |
|---|---|
| `1` `2` `3` `4` | Overview, MBeans, Charts, Notifications (focus goes into the tab) |
| `tab` `shift+tab` | the next / previous control in the tab |
| `escape` | leave a filter or a form |
| `c` | next connection (when several `HOST:PORT` were given) |
| `s` | sort the edge table: again for the other direction, then the next column |
| `/` | filter the edge table by address, state or GUID (Notifications: by type) |
| `d` | drain / undrain the selected edge on this balancer |
| `p` | pause / unpause: this edge, or the selected edge through its own connection |
| `enter` | MBeans: open the MBean, edit the attribute, or invoke the operation |
| `g` | chart the selected numeric attribute; `x` removes the last chart |
| `+` `-` | poll faster / slower |
| `r` | reconnect now |
| `ctrl+p` | command palette: pause, drain, switch redirector, switch connection |
| `?` | this help; `q` quits |

ACTION operations, drains, pauses and redirector switches ask for confirmation, naming the
edge's address. While a text field has focus, keys type into it: none runs an action. A
`readonly` user sees write controls dimmed, with the reason. A lost daemon is retried with
backoff; the header says when, and its last values are greyed with their age.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen Markdown { width: 84; height: auto; max-height: 90%; border: thick $accent;
                          background: $panel; }
    """

    def compose(self) -> ComposeResult:
        yield Markdown(HELP)



def widgets_may_be_gone() -> contextlib.AbstractContextManager[None]:
    """Around code that shows an answer: the answer may come back while the app is being
    torn down, its widgets already removed, and then there is nothing to show it in."""
    return contextlib.suppress(NoMatches)

# What a number key focuses: the tab's own control, so arrows and enter act at once.
TAB_FOCUS = {"overview": "#servers", "mbeans": "#tree", "charts": "Charts",
             "notifications": "#log"}


class LbConsole(App[None]):
    TITLE = "lb-console"
    CSS = """
    #status { dock: top; height: auto; padding: 0 1; background: $primary-background; }
    """
    BINDINGS = [
        Binding("1", "tab('overview')", "Overview"),
        Binding("2", "tab('mbeans')", "MBeans"),
        Binding("3", "tab('charts')", "Charts"),
        Binding("4", "tab('notifications')", "Events"),
        Binding("c", "next_connection", "Conn", show=False),
        Binding("s", "sort", "Sort"),
        Binding("slash", "filter", "Filter"),
        Binding("d", "drain", "Drain"),
        Binding("p", "pause", "Pause"),
        Binding("g", "chart", "Chart"),
        Binding("x", "unchart", "Unchart", show=False),
        Binding("plus,equals_sign", "interval(0.5)", "Faster", show=False),
        Binding("minus", "interval(2.0)", "Slower", show=False),
        Binding("r", "reconnect", "Reconnect", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    class Changed(Message):
        def __init__(self, conn: Connection) -> None:
            super().__init__()
            self.conn = conn

    class Notified(Message):
        def __init__(self, conn: Connection, items: list[dict[str, Any]]) -> None:
            super().__init__()
            self.conn, self.items = conn, items

    def __init__(self, targets: Sequence[ManagementTarget], *, interval: float = 1.0) -> None:
        super().__init__()
        self.connections = [Connection(t, on_change=self._changed,
                                       on_notifications=self._notified, interval=interval)
                            for t in targets]
        self.index = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._status_text = ""
        self._offered: tuple[Any, ...] = ()

    @property
    def current(self) -> Connection:
        return self.connections[self.index]

    def compose(self) -> ComposeResult:
        yield Static("", id="status")
        with TabbedContent(initial="overview"):
            with TabPane("Overview", id="overview"):
                yield Overview()
            with TabPane("MBeans", id="mbeans"):
                yield MBeanBrowser()
            with TabPane("Charts", id="charts"):
                yield Charts()
            with TabPane("Notifications", id="notifications"):
                yield Notifications()
        yield Footer()

    async def on_mount(self) -> None:
        for conn in self.connections:
            self._tasks.append(asyncio.create_task(conn.run()))
            self._tasks.append(asyncio.create_task(conn.follow_notifications()))
        self._render_status()
        self.set_interval(0.5, self._render_status)

    async def on_unmount(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: quitting must never wait on a daemon
            await asyncio.wait(self._tasks, timeout=2.0)
        for conn in self.connections:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)

    # -- updates from the connections ---------------------------------------------
    def _changed(self, conn: Connection) -> None:
        self.post_message(self.Changed(conn))

    def _notified(self, conn: Connection, items: list[dict[str, Any]]) -> None:
        self.post_message(self.Notified(conn, items))

    def on_lb_console_changed(self, message: Changed) -> None:
        with widgets_may_be_gone():
            self._render_status()
            if message.conn is not self.current:
                return  # another connection's news
            tab = self._tab()  # only what is on screen is redrawn; a tab shown is brought
            if tab == "overview":  # up to date then (action_tab)
                self.query_one(Overview).show(self.current)
            elif tab == "charts":
                self.query_one(Charts).show(self.current)
            # The footer is rebuilt only when what it may offer changed: rebuilding it every
            # refresh was most of the console's idle CPU.
            offered = (self.current.state, self.current.daemon, self.current.readonly)
            if offered != self._offered:
                self._offered = offered
                self.refresh_bindings()
            if self.current.state is LinkState.CONNECTED and tab == "mbeans":
                self._refresh_mbeans()

    def on_lb_console_notified(self, message: Notified) -> None:
        if message.conn is self.current:
            with widgets_may_be_gone():
                self.query_one(Notifications).append(message.items)

    def _render_status(self) -> None:
        loop_time = self.current.clock()
        parts = []
        for i, conn in enumerate(self.connections):
            mark = "▶" if i == self.index else " "
            if conn.state is LinkState.CONNECTED:
                state = f"[green]● {conn.daemon} {conn.role}[/]"
            elif conn.state is LinkState.LOST:
                wait = max(0.0, (conn.retry_at or loop_time) - loop_time)
                state = f"[b red]○ lost: {conn.error} — retry in {wait:.0f}s[/]"
            elif conn.state is LinkState.REFUSED:
                state = f"[b red]✖ {conn.error} (r to retry)[/]"
            else:
                state = "[yellow]… connecting[/]"
            parts.append(f"{mark}[{i + 1}] {conn.address} {state}")
        interval = self.current.interval
        text = f"[b]lb-console {__version__}[/]  every {interval:g}s   " + "   ".join(parts)
        status = self.query("#status")  # empty while the app shuts down: a timer may fire
        if status and text != self._status_text:  # unchanged: nothing to redraw
            self._status_text = text
            status.first(Static).update(text)
        if self.current.state is not LinkState.CONNECTED and self.current.answered_at:
            with widgets_may_be_gone():  # the stale values' age goes on counting
                self.query_one(Overview).show(self.current)

    def _tab(self) -> str:
        return self.query_one(TabbedContent).active

    # -- bindings -------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Dim (None) what the caller's role or this daemon does not allow."""
        conn = self.current
        if action in ("drain", "pause"):
            if conn.state is not LinkState.CONNECTED:
                return None
            if action == "drain" and conn.daemon != "balancer":
                return None
            if conn.readonly and not (action == "pause" and conn.daemon == "balancer"):
                return None
        return True

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        if tab == "overview":
            self.query_one(Overview).show(self.current)
        elif tab == "charts":
            self.query_one(Charts).show(self.current)
        elif tab == "mbeans":
            self._refresh_mbeans()
        elif tab == "notifications":
            self.query_one(Notifications).show(self.current)
        # Into the tab, not left on the tab bar: arrows and enter work on what it shows.
        self.query_one(TAB_FOCUS[tab]).focus()

    def action_filter(self) -> None:
        """``/``: the Notifications tab's type filter there, else the edge table's."""
        if self._tab() == "notifications":
            self.query_one("#filter").focus()
            return
        if self._tab() != "overview":
            self.action_tab("overview")
        self.query_one(Overview).open_filter()

    def action_next_connection(self) -> None:
        self.index = (self.index + 1) % len(self.connections)
        self._offered = ()
        self.query_one(Overview).show(self.current)
        self.query_one(Charts).show(self.current)
        self.query_one(Notifications).show(self.current)
        self.query_one(MBeanBrowser).clear()  # the next refresh fills it from this daemon
        self._render_status()
        self.refresh_bindings()
        if self._tab() == "mbeans":
            self._refresh_mbeans()

    def action_sort(self) -> None:
        column = self.query_one(Overview).cycle_sort()
        self.query_one(Overview).show(self.current)
        self.notify(f"sorted by {column}", timeout=1.5)

    @on(DataTable.HeaderSelected, "#servers")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        overview = self.query_one(Overview)
        overview.sort_by(str(event.column_key.value))
        overview.show(self.current)

    def action_interval(self, factor: float) -> None:
        for conn in self.connections:
            conn.interval = min(10.0, max(0.25, conn.interval * factor))
        self._render_status()

    def action_reconnect(self) -> None:
        conn = self.current
        for i, task in enumerate(self._tasks):
            if task.done() and i // 2 == self.index and i % 2 == 0:
                conn.state = LinkState.CONNECTING
                self._tasks[i] = asyncio.create_task(conn.run())
        self._render_status()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # -- drain, pause ---------------------------------------------------------------
    def _selected_server(self) -> dict[str, Any] | None:
        guid = self.query_one(Overview).selected_guid()
        return next((s for s in self.current.servers if s["guid"] == guid), None)

    def action_drain(self) -> None:
        server = self._selected_server()
        if server is None:
            self.notify("select an edge in the Overview table first", severity="warning")
            return
        undrain = server["drained"]
        self.drain(server, not undrain)

    def drain(self, server: dict[str, Any], drained: bool) -> None:
        conn = self.current
        if conn.readonly:
            self.notify(f"cannot drain: {READONLY_REASON}", severity="warning")
            return
        op = "drainServer" if drained else "undrainServer"
        verb = "Drain" if drained else "Undrain"
        self.confirm_invoke(conn, BALANCER, op, [server["guid"]],
                            f"{verb} {server['redirectAddress']} on {conn.address}?\n"
                            f"(edge {server['guid']})")

    def action_pause(self) -> None:
        conn = self.current
        if conn.daemon == "edge":
            paused = conn.overview.get("State") == "PAUSED"
            self.pause(conn, not paused)
            return
        server = self._selected_server()
        if server is None:
            self.notify("select an edge in the Overview table first", severity="warning")
            return
        self.pause_server(server["guid"], server["state"] != "PAUSED")

    def pause_server(self, guid: str, paused: bool) -> None:
        """Pausing is the edge's own act: through its connection, if we have one."""
        edge = next((c for c in self.connections if c.daemon == "edge"
                     and c.overview.get("ServerId") == guid), None)
        if edge is None:
            self.notify("pause is done on the edge itself: start lb-console with its "
                        "management port too (drain with d does the same on this balancer)",
                        severity="warning", timeout=6)
            return
        self.pause(edge, paused)

    def pause(self, conn: Connection, paused: bool) -> None:
        if conn.readonly:
            self.notify(f"cannot pause: {READONLY_REASON}", severity="warning")
            return
        op = "pause" if paused else "unpause"
        address = conn.overview.get("RedirectAddress") or "this edge"
        self.confirm_invoke(conn, SENDER, op, [], f"{op.capitalize()} {address} "
                            f"(management {conn.address})?")

    def confirm_invoke(self, conn: Connection, mbean: str, op: str, args: list[Any],
                       question: str) -> None:
        def answered(ok: bool | None) -> None:
            if ok:
                self.invoke(conn, mbean, op, args)
        self.push_screen(ConfirmScreen(question), answered)

    async def _call(self, conn: Connection, method: str, params: list[Any], failed: str
                    ) -> tuple[bool, Any]:
        """One call for an operator's action; its failure is shown, never raised."""
        browser = self.query_one(MBeanBrowser)
        try:
            return True, await conn.call(method, params)
        except RpcError as exc:
            detail = f" {exc.data}" if exc.data else ""
            with widgets_may_be_gone():
                browser.show_result(f"{failed}: {exc.message}{detail}", error=True)
            self.notify(f"{failed}: {exc.message}", severity="error", timeout=6)
        except ManagementUnavailable as exc:
            self.notify(f"{failed}: {exc}", severity="error")
        return False, None

    @work(group="calls")
    async def invoke(self, conn: Connection, mbean: str, op: str, args: list[Any]) -> None:
        ok, result = await self._call(conn, "invoke", [mbean, op, args], f"{op} failed")
        if ok:
            shown = format_value(result) if result is not None else "done"
            with widgets_may_be_gone():
                self.query_one(MBeanBrowser).show_result(f"{op}: {shown}")
            self.notify(f"{op}: {shown}", timeout=3)

    # -- MBeans tab -----------------------------------------------------------------
    @work(group="refresh-mbeans", exclusive=True)
    async def _refresh_mbeans(self) -> None:
        conn = self.current
        with widgets_may_be_gone():
            browser = self.query_one(MBeanBrowser)
            try:
                browser.set_names(await conn.call("queryNames", ["*:*"]))
                if browser.selected:
                    browser.show_values(await conn.call("getAttributes",
                                                        [browser.selected, None]))
            except RpcError as exc:
                if exc.code == -32001 and browser.selected:  # it went away (an edge left)
                    browser.show_result(f"{browser.selected} is gone", error=True)
                    browser.selected = browser.info = None
            except ManagementUnavailable:
                pass

    @on(Tree.NodeSelected, "#tree")
    def _node(self, event: Tree.NodeSelected[str | None]) -> None:
        if event.node.data:
            self.open_mbean(event.node.data)

    @work(group="open-mbean", exclusive=True)  # its own group: a refresh must not cancel it
    async def open_mbean(self, name: str) -> None:
        conn = self.current
        with widgets_may_be_gone():
            browser = self.query_one(MBeanBrowser)
            try:
                browser.show_info(name, await conn.call("getMBeanInfo", [name]))
                browser.show_values(await conn.call("getAttributes", [name, None]))
            except (RpcError, ManagementUnavailable) as exc:
                browser.show_result(f"cannot open {name}: {exc}", error=True)

    @on(DataTable.RowSelected, "#attributes")
    def _attribute(self, event: DataTable.RowSelected) -> None:
        browser = self.query_one(MBeanBrowser)
        attr = browser.current_attribute()
        if attr is None or browser.selected is None:
            return
        if not attr["writable"]:
            self.notify(f"{attr['name']} is read-only", severity="warning")
            return
        if not attr["canWrite"]:
            self.notify(f"cannot set {attr['name']}: {READONLY_REASON}", severity="warning")
            return
        mbean, conn, name = browser.selected, self.current, attr["name"]

        async def apply(value: Any) -> str | None:
            """Set it; None, or the daemon's refusal (the form stays open with it)."""
            try:
                new = await conn.call("setAttribute", [mbean, name, value])
            except RpcError as exc:
                return exc.message + (f" {exc.data}" if exc.data else "")
            except ManagementUnavailable as exc:
                return str(exc)
            with widgets_may_be_gone():
                self.query_one(MBeanBrowser).show_result(f"{name} = {format_value(new)}")
            self._refresh_mbeans()
            return None
        self.push_screen(EditScreen(mbean, attr, browser.values.get(name), apply))

    @work(group="calls")
    async def set_attribute(self, conn: Connection, mbean: str, attribute: str,
                            value: Any) -> None:
        ok, new = await self._call(conn, "setAttribute", [mbean, attribute, value],
                                   f"{attribute} not set")
        if ok:
            with widgets_may_be_gone():
                self.query_one(MBeanBrowser).show_result(f"{attribute} = {format_value(new)}")
            self._refresh_mbeans()

    @on(DataTable.RowSelected, "#operations")
    def _operation(self, event: DataTable.RowSelected) -> None:
        browser = self.query_one(MBeanBrowser)
        op = browser.current_operation()
        if op is None or browser.selected is None:
            return
        if not op["canInvoke"]:
            self.notify(f"cannot invoke {op['name']}: {READONLY_REASON}", severity="warning")
            return
        mbean, conn = browser.selected, self.current

        def filled(args: list[Any] | None) -> None:
            if args is None:
                return
            if op["impact"] == "ACTION":
                self.confirm_invoke(conn, mbean, op["name"], args,
                                    f"Invoke {op['name']} on {mbean}?")
            else:
                self.invoke(conn, mbean, op["name"], args)
        if op["parameters"]:
            self.push_screen(InvokeScreen(mbean, op), filled)
        else:
            filled([])

    def action_chart(self) -> None:
        browser = self.query_one(MBeanBrowser)
        attr = browser.current_attribute() if self._tab() == "mbeans" else None
        if attr is None or browser.selected is None:
            self.notify("select a numeric attribute in the MBeans tab to chart it",
                        severity="warning")
            return
        if attr["type"] not in ("integer", "number"):
            self.notify(f"{attr['name']} is {attr['type']}: only numbers chart",
                        severity="warning")
            return
        watched = self.current.watched
        key = (browser.selected, attr["name"])
        if key not in watched:
            if len(watched) >= MAX_CHARTS:
                watched.pop(0)
            watched.append(key)
        self.query_one(Charts).show(self.current)
        self.notify(f"charting {attr['name']} (tab 3)", timeout=2)

    def action_unchart(self) -> None:
        if self.current.watched:
            self.current.watched.pop()
            self.query_one(Charts).show(self.current)

    # -- command palette ------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        conn = self.current
        denied = f" (disabled: {READONLY_REASON})" if conn.readonly else ""
        for i, other in enumerate(self.connections):
            if i != self.index:
                yield SystemCommand(f"Switch to connection {i + 1}: {other.address}",
                                    f"{other.daemon or '?'} {other.state}",
                                    lambda i=i: self._switch(i))
        if conn.daemon == "edge":
            yield SystemCommand("Pause this edge", "No new clients; reported at once" + denied,
                                lambda: self.pause(conn, True))
            yield SystemCommand("Unpause this edge", "Take clients again" + denied,
                                lambda: self.pause(conn, False))
        elif conn.daemon == "balancer":
            server = self._selected_server()
            target = server["redirectAddress"] if server else "the selected edge"
            yield SystemCommand(f"Drain {target}", "No new clients on this balancer" + denied,
                                self.action_drain_on)
            yield SystemCommand(f"Undrain {target}", "Clients again" + denied,
                                self.action_undrain)
            yield SystemCommand(f"Pause {target}", "Through the edge's own connection",
                                lambda: self._pause_selected(True))
            yield SystemCommand(f"Unpause {target}", "Through the edge's own connection",
                                lambda: self._pause_selected(False))
            for name in BUILTIN_REDIRECTORS:
                yield SystemCommand(f"Switch redirector to {name}",
                                    f"now {conn.overview.get('Redirector', '?')}" + denied,
                                    lambda name=name: self.switch_redirector(name))

    def _switch(self, index: int) -> None:
        self.index = (index - 1) % len(self.connections)
        self.action_next_connection()

    def action_drain_on(self) -> None:
        server = self._selected_server()
        if server:
            self.drain(server, True)

    def action_undrain(self) -> None:
        server = self._selected_server()
        if server:
            self.drain(server, False)

    def _pause_selected(self, paused: bool) -> None:
        server = self._selected_server()
        if server:
            self.pause_server(server["guid"], paused)

    def switch_redirector(self, name: str) -> None:
        conn = self.current
        if conn.readonly:
            self.notify(f"cannot switch the redirector: {READONLY_REASON}", severity="warning")
            return
        now = conn.overview.get("Redirector", "?")

        def answered(ok: bool | None) -> None:
            if ok:
                self.set_attribute(conn, BALANCER, "Redirector", name)
                self.notify(f"redirector → {name}", timeout=2)
        self.push_screen(ConfirmScreen(f"Switch the redirector of {conn.address} from {now} "
                                       f"to {name}?"), answered)


def _secret(path: str | None) -> str | None:
    return Path(path).read_text(encoding="utf-8").strip() if path else None


def parse_args(argv: Sequence[str] | None) -> tuple[list[ManagementTarget], float]:
    parser = argparse.ArgumentParser(
        prog="lb-console",
        description="Terminal console for lbmgmt balancers and edges (their management "
                    "ports), as JConsole was for the original.")
    parser.add_argument("address", nargs="+", metavar="HOST:PORT",
                        help="management port(s); several are switchable with c")
    parser.add_argument("--user", "-u", help="user name (HTTP Basic)")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--password-file", metavar="F", help="file holding the password")
    secret.add_argument("--token-file", metavar="F", help="file holding a bearer token")
    parser.add_argument("--tls", action="store_true", help="HTTPS")
    parser.add_argument("--cafile", metavar="F", help="CA bundle for the certificate")
    parser.add_argument("--insecure", action="store_true", help="skip certificate checks")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    args = parser.parse_args(argv)
    try:
        password, token = _secret(args.password_file), _secret(args.token_file)
    except OSError as exc:
        parser.error(f"cannot read {exc.filename}: {exc.strerror}")
    if password is not None and args.user is None:
        parser.error("--password-file needs --user")
    targets = [ManagementTarget(a, user=args.user, password=password, token=token, tls=args.tls,
                      cafile=args.cafile, insecure=args.insecure) for a in args.address]
    return targets, max(0.25, args.interval)


def main(argv: Sequence[str] | None = None) -> int:
    targets, interval = parse_args(argv)
    LbConsole(targets, interval=interval).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
