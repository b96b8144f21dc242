"""The MBeans tab, JConsole-style: a tree of names, the selected MBean's details."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static, Tree
from textual.widgets.tree import TreeNode

from lbmgmt.management.objectname import ObjectName
from tui.forms import signature
from tui.typed_input import format_value

READONLY_REASON = "your role is readonly"
VALUE_WIDTH = 44


def group_path(name: str) -> list[str]:
    """Tree path of an object name: domain, then type, then the other key properties."""
    parsed = ObjectName.parse(name)
    path = [parsed.domain]
    kind = parsed.get("type")
    if kind:
        path.append(kind)
    rest = [f"{k}={v}" for k, v in parsed.properties if k != "type"]
    return path + rest if rest else path


class MBeanBrowser(Horizontal):
    DEFAULT_CSS = """
    MBeanBrowser { height: 1fr; }
    MBeanBrowser Tree { width: 42; border-right: solid $primary; }
    MBeanBrowser #detail { width: 1fr; }
    MBeanBrowser #mbean-title { height: auto; padding: 0 1; background: $boost; }
    MBeanBrowser #attributes { height: 2fr; }
    MBeanBrowser #operations { height: 1fr; }
    MBeanBrowser #result { height: auto; max-height: 8; padding: 0 1; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.selected: str | None = None
        self.info: dict[str, Any] | None = None
        self.values: dict[str, Any] = {}
        self._tree_nodes: dict[str, TreeNode[str | None]] = {}

    def compose(self) -> ComposeResult:
        tree: Tree[str | None] = Tree("MBeans", id="tree")
        tree.root.expand()
        yield tree
        with Vertical(id="detail"):
            yield Static("select an MBean (enter)", id="mbean-title")
            attributes: DataTable[Any] = DataTable(id="attributes", cursor_type="row")
            attributes.add_columns("Attribute", "Value", "Type", "Access")
            yield attributes
            operations: DataTable[Any] = DataTable(id="operations", cursor_type="row")
            operations.add_columns("Operation", "Returns", "Impact", "Access")
            yield operations
            yield Static("", id="result")

    # -- the tree -------------------------------------------------------------------
    def set_names(self, names: list[str]) -> None:
        """Add new names, drop gone ones, keep what is expanded as it is."""
        tree = self.query_one("#tree", Tree)
        wanted = set(names)
        for name in [n for n in self._tree_nodes if n not in wanted]:
            node = self._tree_nodes.pop(name)
            parent = node.parent
            node.remove()
            while parent is not None and not parent.is_root and not parent.children:
                grand = parent.parent
                parent.remove()
                parent = grand
        for name in names:
            if name in self._tree_nodes:
                continue
            node = tree.root
            path = group_path(name)
            for label in path[:-1]:
                child = next((c for c in node.children if str(c.label) == label
                              and c.data is None), None)
                if child is None:
                    child = node.add(label, expand=True)
                node = child
            self._tree_nodes[name] = node.add_leaf(path[-1], data=name)

    def select_name(self, name: str) -> None:
        node = self._tree_nodes.get(name)
        if node is not None:
            self.query_one("#tree", Tree).move_cursor(node)

    # -- the selected MBean ---------------------------------------------------------
    def show_info(self, name: str, info: dict[str, Any]) -> None:
        self.selected, self.info, self.values = name, info, {}
        access = info["access"]
        self.query_one("#mbean-title", Static).update(
            f"[b]{name}[/]  {info['className']}: {info['description']}\n"
            f"you are {access['role']}"
            + ("" if access["canWrite"] else f": set and ACTION operations disabled "
               f"({READONLY_REASON})"))
        operations = self.query_one("#operations", DataTable)
        operations.clear()
        for op in info["operations"]:
            allowed = op["canInvoke"]
            operations.add_row(f"{op['name']}({signature(op)})", op["returnType"], op["impact"],
                               "invoke" if allowed else Text(f"disabled: {READONLY_REASON}",
                                                             style="dim"),
                               key=op["name"])
        attributes = self.query_one("#attributes", DataTable)
        attributes.clear()

    def show_values(self, values: dict[str, Any]) -> None:
        if self.info is None:
            return
        self.values = values
        table = self.query_one("#attributes", DataTable)
        for attr in self.info["attributes"]:
            name = attr["name"]
            value = format_value(values.get(name))
            if len(value) > VALUE_WIDTH:  # the full value is in the edit form and in get
                value = value[:VALUE_WIDTH - 1] + "…"
            if attr["writable"]:
                access = "rw" if attr["canWrite"] else Text(f"rw (disabled: {READONLY_REASON})",
                                                            style="dim")
            else:
                access = "r"
            if name in table.rows:
                table.update_cell(name, table.ordered_columns[1].key, value)
            else:
                table.add_row(name, value, attr["type"] + (f" {attr['unit']}" if attr.get("unit")
                                                           else ""), access, key=name)

    def current_attribute(self) -> dict[str, Any] | None:
        return self._current("#attributes", "attributes")

    def current_operation(self) -> dict[str, Any] | None:
        return self._current("#operations", "operations")

    def _current(self, table_id: str, kind: str) -> dict[str, Any] | None:
        """The attribute or operation under the cursor of its table."""
        table = self.query_one(table_id, DataTable)
        if self.info is None or table.row_count == 0:
            return None
        key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return next((item for item in self.info[kind] if item["name"] == key.value), None)

    def clear(self) -> None:
        """Forget everything shown: another daemon's tree and details are coming."""
        self._tree_nodes.clear()
        self.query_one("#tree", Tree).root.remove_children()
        self.info = self.selected = None
        self.values = {}
        self.query_one("#mbean-title", Static).update("select an MBean (enter)")
        self.query_one("#attributes", DataTable).clear()
        self.query_one("#operations", DataTable).clear()
        self.query_one("#result", Static).update("")

    def show_result(self, text: str, *, error: bool = False) -> None:
        self.query_one("#result", Static).update(
            Text(text, style="bold red" if error else "green"))
