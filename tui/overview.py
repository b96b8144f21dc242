"""The overview tab: a balancer's edges (HAProxy-stats style) or an edge's own state."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from tui.connection import Connection
from tui.history import bar, sparkline
from tui.typed_input import format_value

SERVER_COLUMNS = [("address", "Address"), ("state", "State"), ("available", "Avail"),
                  ("drained", "Drained"), ("load", "Load"), ("trend", "Load trend"),
                  ("redirects", "Redir/rep"), ("age", "Age s"), ("clock", "Clock ms"),
                  ("note", "Why not / last drop"), ("guid", "GUID")]
SORTABLE = ["address", "state", "available", "drained", "load", "redirects", "age"]
TARGET_COLUMNS = [("address", "Balancer"), ("result", "Last send"), ("sent", "Reports sent"),
                  ("errors", "Errors")]


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _offset(ms: Any) -> Text | str:
    """The edge's clock less the balancer's: yellow past a second (NTP is not working)."""
    if not isinstance(ms, int):
        return "—"
    return Text(f"{ms:+d}", style="yellow" if abs(ms) >= 1000 else "")


def _note(server: dict[str, Any]) -> Text | str:
    """Why it takes no clients (its monitor fails), else why its last report was dropped."""
    if server.get("unhealthy"):
        return Text(str(server["unhealthy"]), style="red")
    if server.get("lastDrop"):
        return Text(f"dropped: {server['lastDrop']}", style="yellow")
    return ""


class Overview(Vertical):
    DEFAULT_CSS = """
    Overview { height: 1fr; }
    Overview #totals { height: auto; padding: 0 1; background: $boost; }
    Overview DataTable { height: 1fr; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sort_column = "load"
        self.sort_reverse = False
        self._mode = ""

    def compose(self) -> ComposeResult:
        yield Static("waiting for the daemon…", id="totals")
        table: DataTable[Any] = DataTable(id="servers", cursor_type="row", zebra_stripes=True)
        yield table

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
        i = SORTABLE.index(self.sort_column) if self.sort_column in SORTABLE else -1
        self.sort_column = SORTABLE[(i + 1) % len(SORTABLE)]
        return self.sort_column

    def sort_by(self, column: str) -> None:
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        elif column in SORTABLE:
            self.sort_column, self.sort_reverse = column, False

    def show(self, conn: Connection | None) -> None:
        totals = self.query_one("#totals", Static)
        if conn is None or not conn.daemon:
            totals.update("waiting for the daemon…" if conn is None or not conn.error
                          else f"[b red]{conn.error}[/]")
            return
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

    def _show_balancer(self, conn: Connection, totals: Static) -> None:
        o, h = conn.overview, conn.history
        drops = sum((o.get("ReportsDropped") or {}).values())
        outside = conn.dropped_outside()
        totals.update(
            f"[b]{o.get('ServerCount', 0)}[/] servers, [b]{o.get('AvailableServerCount', 0)}"
            f"[/] available   redirects/s [b]{_rate(h.get('redirects').rate())}[/]   "
            f"reports/s [b]{_rate(h.get('reports').rate())}[/]   drops [b]{drops}[/]   "
            + (f"[yellow]not joining: {outside}[/]   " if outside else "")
            + f"redirector [b]{o.get('Redirector', '?')}[/]   timeout "
            f"{o.get('MessageTimeout', '?')} ms   sort: {self.sort_column}"
            f"{' ↓' if self.sort_reverse else ''}")
        table = self._columns("balancer", SERVER_COLUMNS)
        selected = self.selected_guid()  # the cursor follows its edge, not its row number
        top = max((s.get("load") or 0 for s in conn.servers), default=0)
        seen = set()
        for s in conn.servers:
            guid = s["guid"]
            seen.add(guid)
            load = s.get("load") or 0
            state = Text(s["state"], style="yellow" if s["state"] != "RUNNING" else "green")
            cells = {
                "address": s["redirectAddress"], "state": state,
                "available": Text("yes" if s["available"] else "no",
                                  style="green" if s["available"] else "red"),
                "drained": Text("drained", style="magenta") if s["drained"] else "",
                "load": f"{bar(load, top, 8)} {format_value(load)}",
                "trend": sparkline(conn.history.get(f"load:{guid}").values, 16),
                "redirects": str(s["redirectsSinceReport"]),
                "age": f"{s['secondsSinceReport']:.1f}",
                "clock": _offset(s.get("clockOffsetMs")),
                "note": _note(s), "guid": guid,
            }
            if guid in table.rows:
                for key, value in cells.items():
                    table.update_cell(guid, key, value)
            else:
                table.add_row(*(cells[k] for k, _ in SERVER_COLUMNS), key=guid)
        for row_key in [k for k in table.rows if k.value not in seen]:
            table.remove_row(row_key)
        by_guid = {s["guid"]: s for s in conn.servers}
        column = self.sort_column
        field = {"address": "redirectAddress", "redirects": "redirectsSinceReport",
                 "age": "secondsSinceReport"}.get(column, column)
        if table.row_count:
            table.sort("guid", key=lambda guid: _sort_key(by_guid.get(guid, {}).get(field)),
                       reverse=self.sort_reverse)
            if selected is not None and selected in seen:
                table.move_cursor(row=table.get_row_index(selected), animate=False)

    def _show_edge(self, conn: Connection, totals: Static) -> None:
        o = conn.overview
        state = o.get("State", "?")
        colour = "green" if state == "RUNNING" else "yellow"
        monitor_error = o.get("MonitorError")
        totals.update(
            f"edge [b]{o.get('RedirectAddress', '?')}[/]  [{colour}]{state}[/]  load "
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


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value or ""))
