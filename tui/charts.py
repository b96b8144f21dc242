"""The charts tab: numeric attributes over time, several at once, with their axis values."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Sparkline, Static

from tui.connection import Connection
from tui.typed_input import format_value

MAX_CHARTS = 8


class Chart(Vertical):
    DEFAULT_CSS = """
    Chart { height: 6; border: round $primary; padding: 0 1; }
    Chart Sparkline { height: 3; }
    """

    def __init__(self, mbean: str, attribute: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mbean, self.attribute = mbean, attribute

    def compose(self) -> ComposeResult:
        yield Label(self.mbean, classes="title")
        yield Sparkline([], summary_function=max)

    def update_values(self, values: list[float]) -> None:
        self.query_one(Sparkline).data = values or [0.0]
        if values:
            lo, hi, last = min(values), max(values), values[-1]
            axis = (f"max {format_value(hi)}  min {format_value(lo)}  last "
                    f"[b]{format_value(last)}[/]  over {len(values)} samples")
        else:
            axis = "no samples yet"
        self.border_title = f"{self.attribute}"
        self.border_subtitle = axis  # the axis values, under the line


class Charts(VerticalScroll):
    DEFAULT_CSS = "Charts { height: 1fr; }"

    def compose(self) -> ComposeResult:
        yield Static("No charts yet. In the MBeans tab, select a numeric attribute and press "
                     "[b]g[/] to chart it (up to 8 at once); [b]x[/] here removes the last.",
                     id="charts-help")

    def show(self, conn: Connection | None) -> None:
        wanted = list(conn.watched) if conn else []
        charts = list(self.query(Chart))
        have = [(c.mbean, c.attribute) for c in charts]
        if have != wanted:
            for chart in charts:
                chart.remove()
            for mbean, attribute in wanted:
                self.mount(Chart(mbean, attribute))
            self.query_one("#charts-help").display = not wanted
            return
        assert conn is not None
        for chart in charts:
            chart.update_values(conn.history.get(f"chart:{chart.mbean}:{chart.attribute}").values)
