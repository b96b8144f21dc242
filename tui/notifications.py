"""The notifications tab: the daemon's events as they happen, filterable by type."""

from __future__ import annotations

import datetime
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, RichLog

from tui.connection import Connection
from tui.typed_input import format_value

STYLES = {"joined": "green", "left": "red", "paused": "yellow", "unpaused": "green",
          "drained": "magenta", "undrained": "green", "dropped": "red", "change": "cyan"}


def line(n: dict[str, Any]) -> Text:
    when = datetime.datetime.fromtimestamp(n.get("timestamp") or 0).strftime("%H:%M:%S")
    kind = n.get("type", "?")
    style = next((s for word, s in STYLES.items() if kind.endswith(word)), "white")
    text = Text(f"{when} ", style="dim")
    text.append(f"{kind:<30}", style=style)
    text.append(f" {n.get('message', '')}")
    data = n.get("data")
    if kind == "jmx.attribute.change" and isinstance(data, dict) and "attribute" in data:
        text.append(f"  {data['attribute']}: ", style="bold")
        text.append(format_value(data.get("oldValue")), style="red")
        text.append(" → ")
        text.append(format_value(data.get("newValue")), style="green")
    if isinstance(data, dict) and "guid" in data:
        text.append(f"  {data['guid']}", style="dim")
    return text


class Notifications(Vertical):
    BINDINGS = [Binding("escape", "leave_filter", "To the events", show=False)]
    DEFAULT_CSS = """
    Notifications { height: 1fr; }
    Notifications RichLog { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter by type (e.g. server.left, drained) — empty: all",
                    id="filter")
        yield RichLog(id="log", max_lines=2000)

    @property
    def filter_text(self) -> str:
        return self.query_one("#filter", Input).value.strip()

    def matches(self, n: dict[str, Any]) -> bool:
        wanted = self.filter_text
        return not wanted or wanted in n.get("type", "")

    def append(self, items: list[dict[str, Any]]) -> None:
        log = self.query_one("#log", RichLog)
        for n in items:
            if self.matches(n):
                log.write(line(n))

    def show(self, conn: Connection | None) -> None:
        log = self.query_one("#log", RichLog)
        log.clear()
        if conn is not None:
            self.append(list(conn.notifications))

    def action_leave_filter(self) -> None:
        self.query_one("#log", RichLog).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#log", RichLog).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.app.call_later(self._refilter)

    def _refilter(self) -> None:
        conn = getattr(self.app, "current", None)
        self.show(conn)
