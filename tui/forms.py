"""Modal forms: edit an attribute, fill in an operation's parameters, confirm an action."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import Function
from textual.widgets import Button, Input, Label, Static

from tui.typed_input import TypedInputError, format_value, parse_value

T = TypeVar("T")

FORM_CSS = """
ModalScreen { align: center middle; }
#form { width: 72; height: auto; max-height: 90%; border: thick $accent; background: $panel;
        padding: 1 2; }
#form Label.title { text-style: bold; margin-bottom: 1; }
#form .error { color: $error; height: auto; }
#form Horizontal { height: auto; margin-top: 1; }
#form Button { margin-right: 2; }
"""


def _validator(type_: str) -> Function:
    def ok(text: str) -> bool:
        try:
            parse_value(text, type_)
        except TypedInputError:
            return False
        return True
    return Function(ok, f"not a valid {type_}")


class ConfirmScreen(ModalScreen[bool]):
    """Asked before an ACTION operation, as JConsole did."""

    DEFAULT_CSS = FORM_CSS
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Label(self.question, classes="title")
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="warning")
                yield Button("No (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class FormScreen(ModalScreen[T]):
    """A form that submits on enter or its OK button and dismisses with None on cancel."""

    DEFAULT_CSS = FORM_CSS
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def _submit(self) -> None:
        raise NotImplementedError

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class EditScreen(FormScreen[Any]):
    """Set a writable attribute: ``apply`` sets it, answering None or why it was refused;
    a refusal stays on the form (fix it or escape), a success dismisses with the value."""

    def __init__(self, mbean: str, attribute: dict[str, Any], value: Any,
                 apply: Callable[[Any], Awaitable[str | None]]) -> None:
        super().__init__()
        self.mbean, self.attribute, self.value, self.apply = mbean, attribute, value, apply

    def compose(self) -> ComposeResult:
        a = self.attribute
        with Vertical(id="form"):
            yield Label(f"Set {a['name']} ({a['type']}{', ' + a['unit'] if a.get('unit') else ''})",
                        classes="title")
            yield Static(f"{self.mbean}\n{a['description']}")
            yield Input(format_value(self.value), id="value", validators=[_validator(a["type"])])
            yield Static("", id="error", classes="error")
            with Horizontal():
                yield Button("Set (enter)", id="ok", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def _submit(self) -> None:
        text = self.query_one("#value", Input).value
        try:
            value = parse_value(text, self.attribute["type"])
        except TypedInputError as exc:
            self.query_one("#error", Static).update(str(exc))
            return
        self.query_one("#error", Static).update("setting…")
        self.run_worker(self._apply(value), group="apply", exclusive=True)

    async def _apply(self, value: Any) -> None:
        refused = await self.apply(value)
        if refused is None:
            self.dismiss(value)
            return
        self.query_one("#error", Static).update(f"refused: {refused}")
        self.query_one("#value", Input).focus()


class InvokeScreen(FormScreen[list[Any] | None]):
    """One typed field per parameter; dismisses with the argument list (None on cancel)."""

    def __init__(self, mbean: str, operation: dict[str, Any]) -> None:
        super().__init__()
        self.mbean, self.operation = mbean, operation

    def compose(self) -> ComposeResult:
        op = self.operation
        with Vertical(id="form"):
            yield Label(f"{op['name']}({signature(op)}) → {op['returnType']}  [{op['impact']}]",
                        classes="title")
            yield Static(f"{self.mbean}\n{op['description']}")
            for i, p in enumerate(op["parameters"]):
                yield Label(f"{p['name']}: {p['type']}  {p['description']}")
                yield Input(placeholder=p["type"], id=f"p{i}", validators=[_validator(p["type"])])
            yield Static("", id="error", classes="error")
            with Horizontal():
                yield Button("Invoke (enter)", id="ok", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def _submit(self) -> None:
        args = []
        for i, p in enumerate(self.operation["parameters"]):
            try:
                args.append(parse_value(self.query_one(f"#p{i}", Input).value, p["type"]))
            except TypedInputError as exc:
                self.query_one("#error", Static).update(f"{p['name']}: {exc}")
                self.query_one(f"#p{i}", Input).focus()
                return
        self.dismiss(args)


def signature(operation: dict[str, Any]) -> str:
    return ", ".join(f"{p['name']}: {p['type']}" for p in operation["parameters"])
