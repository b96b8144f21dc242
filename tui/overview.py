"""The overview tab: a balancer's edges (HAProxy-stats style) or an edge's own state."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static

from tui.connection import Connection, LinkState
from tui.history import bar, sparkline
from tui.typed_input import format_value

SERVER_COLUMNS = [("address", "Address"), ("group", "Group"), ("state", "State"),
                  ("available", "Avail"),
                  ("drained", "Drained"), ("load", "Load"), ("trend", "Load trend"),
                  ("redirects", "Redir/rep"), ("age", "Last report"), ("clock", "Clock ms"),
                  ("note", "Why not / last drop"), ("guid", "GUID")]
RUNTIME_EVERY = 5.0  # seconds between two redraws of the process line
SORTABLE = ["address", "group", "state", "available", "drained", "load", "redirects", "age"]
TARGET_COLUMNS = [("address", "Balancer"), ("result", "Last send"), ("sent", "Reports sent"),
                  ("errors", "Errors")]


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _offset(ms: Any) -> Text | str:
    """The edge's clock less the balancer's: "ok" within 100 ms (the few ms it moves by
    with every report would redraw the table every second), yellow past a second (NTP is
    not working)."""
    if not isinstance(ms, int):
        return "—"
    if abs(ms) < 100:
        return Text("ok", style="dim")
    return Text(f"{ms:+d}", style="yellow" if abs(ms) >= 1000 else "")


def _report_age(server: dict[str, Any]) -> Text:
    """"on time" while its reports come as often as it says (the age of a report cycling
    from 0 to the interval tells nothing, and redrew the table every second); late, with
    how long, once it missed one."""
    age = server.get("secondsSinceReport") or 0.0
    interval = (server.get("intervalMs") or 2500) / 1000
    if age <= interval * 1.5:  # the balancer's own slack: half an interval
        return Text("on time", style="dim")
    return Text(f"late {age:.0f} s", style="yellow" if age < 4 * interval else "red")


def _note(server: dict[str, Any]) -> Text | str:
    """Why it takes no clients (its monitor fails), else why its last report was dropped."""
    if server.get("unhealthy"):
        return Text(str(server["unhealthy"]), style="red")
    if server.get("lastDrop"):
        return Text(f"dropped: {server['lastDrop']}", style="yellow")
    return ""


class Line(Static):
    """A few lines of markup, of a fixed height, redrawn alone when their text changes.

    Static.update lays the whole screen out again (its height may change), which redrew
    the edge table with it every refresh: most of an idle console's CPU.
    """

    def __init__(self, text: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text = text

    def render(self) -> Text:
        return Text.from_markup(self.text)

    def show(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.refresh()


def _mib(value: Any) -> str:
    return f"{value / (1 << 20):.0f} MiB" if isinstance(value, int | float) else "—"


def _uptime(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "—"
    s = int(seconds)
    days, s = divmod(s, 86400)
    return (f"{days}d " if days else "") + f"{s // 3600:d}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def runtime_line(conn: Connection) -> str:
    """The daemon's process (lbmgmt:type=Runtime), JConsole's Overview in one line."""
    r, h = conn.runtime, conn.history
    if not r:
        return ""
    lag = r.get("LoopLag") or {}
    gc = r.get("GcCollections") or {}
    return (f"process [b]{r.get('EventLoop', '?')}[/] {r.get('Python', '')}  up "
            f"{_uptime(r.get('Uptime'))}   CPU [b]{r.get('CpuPercent', 0):.1f}%[/] "
            f"{sparkline(h.get('runtime:cpu').values, 12)}   RSS [b]{_mib(r.get('Rss'))}[/] "
            f"{sparkline(h.get('runtime:rss').values, 12)}   loop lag p50 "
            f"{lag.get('p50', 0):.1f} p99 [b]{lag.get('p99', 0):.1f}[/] ms "
            f"{sparkline(h.get('runtime:lag').values, 12)}   tasks {r.get('Tasks', '?')}   "
            f"fds {r.get('OpenFileDescriptors', '?')}   gc "
            + "/".join(str(gc.get(g, 0)) for g in ("0", "1", "2")))


class Overview(Vertical):
    DEFAULT_CSS = """
    Overview { height: 1fr; }
    Overview #totals { height: 3; padding: 0 1; background: $boost; }
    Overview #runtime { height: 2; padding: 0 1; color: $text-muted; }
    Overview #server-filter { display: none; }
    Overview #server-filter.shown { display: block; }
    Overview.stale DataTable { color: $text-disabled; }
    Overview DataTable { height: 1fr; }
    """

    BINDINGS = [Binding("escape", "close_filter", "Clear filter", show=False)]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sort_column = "load"
        self.sort_reverse = False
        self._mode = ""
        self._shown: Connection | None = None
        self._note = ""  # above the totals: why the values may be old
        self._runtime_at = float("-inf")  # when the process line was last drawn, and whose
        self._runtime_of: Connection | None = None

    def compose(self) -> ComposeResult:
        yield Line("waiting for the daemon…", id="totals")
        yield Line("", id="runtime")
        yield Input(placeholder="filter edges by address, state or GUID (enter: to the "
                    "table, esc: clear)", id="server-filter")
        table: DataTable[Any] = DataTable(id="servers", cursor_type="row", zebra_stripes=True)
        yield table

    # -- the filter (/) ---------------------------------------------------------------
    @property
    def filter_text(self) -> str:
        return self.query_one("#server-filter", Input).value.strip().lower()

    def open_filter(self) -> None:
        box = self.query_one("#server-filter", Input)
        box.add_class("shown")
        box.focus()

    def action_close_filter(self) -> None:
        box = self.query_one("#server-filter", Input)
        box.value = ""
        box.remove_class("shown")
        self.table.focus()
        self.show(self._shown)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "server-filter":
            self.show(self._shown)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "server-filter":
            self.table.focus()

    def _wanted(self, server: dict[str, Any]) -> bool:
        text = self.filter_text
        return not text or any(text in str(server.get(k, "")).lower()
                               for k in ("redirectAddress", "group", "state", "guid"))

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one("#servers", DataTable)

    def selected_guid(self) -> str | None:
        table = self.table
        if self._mode != "balancer" or table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return str(row_key.value)

    def cycle_sort(self) -> str:
        """``s``: the same column reversed, then the next column ascending."""
        if not self.sort_reverse and self.sort_column in SORTABLE:
            self.sort_reverse = True
        else:
            i = SORTABLE.index(self.sort_column) if self.sort_column in SORTABLE else -1
            self.sort_column, self.sort_reverse = SORTABLE[(i + 1) % len(SORTABLE)], False
        return self.sort_column + (" ↓" if self.sort_reverse else " ↑")

    def sort_by(self, column: str) -> None:
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        elif column in SORTABLE:
            self.sort_column, self.sort_reverse = column, False

    def show(self, conn: Connection | None) -> None:
        self._shown = conn
        totals = self.query_one("#totals", Line)
        if conn is None or not conn.daemon:
            totals.show("waiting for the daemon…" if conn is None or not conn.error
                        else f"[b red]{conn.error}[/]")
            return
        stale = conn.state is not LinkState.CONNECTED and conn.answered_at is not None
        self.set_class(stale, "stale")
        self._note = ""
        if stale:
            assert conn.answered_at is not None
            age = max(0.0, conn.clock() - conn.answered_at)
            self._note = (f"[b red]STALE: values from {age:.0f} s ago, when {conn.address} "
                          f"last answered[/]\n")
        now = conn.clock()
        if now - self._runtime_at >= RUNTIME_EVERY or conn is not self._runtime_of:
            self._runtime_at, self._runtime_of = now, conn  # (its figures move every second;
            self.query_one("#runtime", Line).show(runtime_line(conn))  # redrawn every 5 s)
        if conn.daemon == "balancer":
            self._show_balancer(conn, totals)
        else:
            self._show_edge(conn, totals)

    def _columns(self, mode: str, columns: list[tuple[str, str]]) -> DataTable[Any]:
        table = self.table
        if self._mode != mode:
            table.clear(columns=True)
            for key, label in columns:
                table.add_column(label, key=key)
            self._mode = mode
        return table

    def _show_balancer(self, conn: Connection, totals: Line) -> None:
        o, h = conn.overview, conn.history
        drops = sum((o.get("ReportsDropped") or {}).values())
        outside = conn.dropped_outside()
        totals.show(
            self._note + f"[b]{o.get('ServerCount', 0)}[/] servers, "
            f"[b]{o.get('AvailableServerCount', 0)}[/] available   "
            f"redirects/s [b]{_rate(h.get('redirects').rate())}[/]   "
            f"reports/s [b]{_rate(h.get('reports').rate())}[/]   drops [b]{drops}[/]   "
            + (f"[yellow]not joining: {outside}[/]   " if outside else "")
            + _groups(o.get("Groups"))
            + f"redirector [b]{o.get('Redirector', '?')}[/]   timeout "
            f"{o.get('MessageTimeout', '?')} ms   sort: {self.sort_column}"
            f"{' ↓' if self.sort_reverse else ' ↑'}"
            + (f"   [b]filter: {self.filter_text}[/]" if self.filter_text else ""))
        table = self._columns("balancer", SERVER_COLUMNS)
        self._label_sorted(table)
        selected = self.selected_guid()  # the cursor follows its edge, not its row number
        top = max((s.get("load") or 0 for s in conn.servers), default=0)
        seen = set()
        for s in conn.servers:
            if not self._wanted(s):
                continue
            guid = s["guid"]
            seen.add(guid)
            load = s.get("load") or 0
            capacity = s.get("capacity")  # reported: the bar is against it, else the busiest
            state = Text(s["state"], style="yellow" if s["state"] != "RUNNING" else "green")
            cells = {
                "address": s["redirectAddress"], "group": s.get("group") or "",
                "state": state,
                "available": Text("yes" if s["available"] else "no",
                                  style="green" if s["available"] else "red"),
                "drained": Text("drained", style="magenta") if s["drained"] else "",
                "load": (f"{bar(load, capacity, 8)} {format_value(load)}/{format_value(capacity)}"
                         if capacity else f"{bar(load, top, 8)} {format_value(load)}"),
                "trend": sparkline(conn.history.get(f"load:{guid}").values, 16),
                "redirects": str(s["redirectsSinceReport"]),
                "age": _report_age(s),
                "clock": _offset(s.get("clockOffsetMs")),
                "note": _note(s), "guid": guid,
            }
            if guid in table.rows:
                row = table.get_row(guid)
                for (key, _), old in zip(SERVER_COLUMNS, row, strict=True):
                    if cells[key] != old:  # unchanged cells are not redrawn
                        table.update_cell(guid, key, cells[key])
            else:
                table.add_row(*(cells[k] for k, _ in SERVER_COLUMNS), key=guid)
        for row_key in [k for k in table.rows if k.value not in seen]:
            table.remove_row(row_key)
        by_guid = {s["guid"]: s for s in conn.servers}
        column = self.sort_column
        field = {"address": "redirectAddress", "redirects": "redirectsSinceReport",
                 "age": "secondsSinceReport"}.get(column, column)
        if table.row_count:
            shown = [row.key.value for row in table.ordered_rows]
            order = sorted(shown, key=lambda guid: _sort_key(by_guid.get(guid, {}).get(field)),
                           reverse=self.sort_reverse)  # (stable: ties keep their places)
            if shown != order:  # a sort redraws every row: only when the order changed
                table.sort("guid", key=lambda guid: _sort_key(by_guid.get(guid, {}).get(field)),
                           reverse=self.sort_reverse)
            if selected is not None and selected in seen:
                table.move_cursor(row=table.get_row_index(selected), animate=False)

    def _label_sorted(self, table: DataTable[Any]) -> None:
        """The sorted column's header says so, with its direction."""
        changed = False
        for key, label in SERVER_COLUMNS:
            if key == self.sort_column:
                label = f"{label} {'▼' if self.sort_reverse else '▲'}"
            column = table.columns.get(key)  # type: ignore[call-overload]
            if column is not None and str(column.label) != label:
                column.label = Text(label)
                changed = True
        if changed:
            table.refresh()

    def _show_edge(self, conn: Connection, totals: Line) -> None:
        o = conn.overview
        state = o.get("State", "?")
        colour = "green" if state == "RUNNING" else "yellow"
        monitor_error = o.get("MonitorError")
        totals.show(
            self._note + f"edge [b]{o.get('RedirectAddress', '?')}[/]  [{colour}]{state}[/]  load "
            f"[b]{format_value(o.get('Load'))}[/] {sparkline(conn.history.get('load').values, 20)}"
            f"   reports sent [b]{o.get('ReportsSent', 0)}[/]   send errors "
            f"{o.get('SendErrors', 0)}   every {o.get('MessageInterval', '?')} ms\n"
            f"monitor {o.get('Monitor', '?')}"
            + (f"   [red]monitor error: {monitor_error}[/]" if monitor_error else "")
            + f"   guid {o.get('ServerId', '?')}")
        table = self._columns("edge", TARGET_COLUMNS)
        table.clear()
        for t in o.get("Targets") or []:
            ok = t["lastResult"] == "ok"
            table.add_row(t["address"], Text(t["lastResult"], style="green" if ok else "red"),
                          str(t["reportsSent"]), str(t["sendErrors"]))


def _groups(groups: Any) -> str:
    """Each edge group's available/total edges, when the fleet has groups."""
    if not isinstance(groups, dict) or not any(groups):
        return ""
    shown = [f"{name or '(none)'} [b]{row.get('available', 0)}[/]/{row.get('edges', 0)}"
             for name, row in sorted(groups.items()) if isinstance(row, dict)]
    return "groups " + ", ".join(shown) + "   "


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value or ""))
