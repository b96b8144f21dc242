"""The architecture, checked from the source: no import cycle, sans-IO stays sans-IO.

Read with ``ast`` (nothing is imported), so a violation names the file and the
import. docs/architecture.md draws the layers these tests hold.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "lbmgmt"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports, anywhere in it (functions too), by full name."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return found


GRAPH = {name: {m for m in imports_of(name) if m in MODULES and m != name} for name in MODULES}


def find_cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(GRAPH):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_no_import_cycle_anywhere_in_the_package():
    cycle = find_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_hidden_behind_type_checking():
    hidden = [str(p.relative_to(ROOT)) for p in MODULES.values()
              if "TYPE_CHECKING" in p.read_text(encoding="utf-8")]
    assert hidden == []


CODECS = [n for n in MODULES if n.startswith(("lbmgmt.status", "lbmgmt.rtmp", "lbmgmt.rtsp"))]
SANS_IO = CODECS + [
    "lbmgmt.balancer.core", "lbmgmt.balancer.registry", "lbmgmt.balancer.redirectors",
    "lbmgmt.balancer.serverinfo", "lbmgmt.balancer.front.http",
    "lbmgmt.balancer.front.answers", "lbmgmt.balancer.front.rtsp",
    "lbmgmt.balancer.front.rtmpt", "lbmgmt.balancer.front.rtmp_apps",
    "lbmgmt.balancer.front.sniff", "lbmgmt.balancer.routing", "lbmgmt.admission",
    "lbmgmt.balancer.report_gate", "lbmgmt.balancer.state", "lbmgmt.management.strict_json"]
IO = {"asyncio", "socket", "time", "selectors", "aiohttp", "uvloop", "threading"}


@pytest.mark.parametrize("name", sorted(SANS_IO))
def test_sans_io_modules_import_no_io_and_no_clock(name: str):
    reached = {m.split(".")[0] for m in imports_of(name)} & IO
    assert reached == set(), f"{MODULES[name].relative_to(ROOT)} imports {sorted(reached)}"


def reaches(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("front", sorted(
    [n for n in MODULES if n.startswith("lbmgmt.balancer.front")]
    + ["lbmgmt.balancer.rtmp", "lbmgmt.balancer.mbeans", "lbmgmt.balancer.core"]))
def test_the_fronts_depend_on_the_core_never_on_the_daemon(front: str):
    assert "lbmgmt.balancer.daemon" not in reaches(front)


def test_the_edge_mbeans_never_see_the_edge_daemon():
    assert "lbmgmt.edge.daemon" not in reaches("lbmgmt.edge.mbeans")


def test_the_codecs_and_the_wire_format_need_nothing_above_them():
    for name in CODECS:
        above = {m for m in reaches(name)
                 if not m.startswith(("lbmgmt.status", "lbmgmt.rtmp", "lbmgmt.rtsp"))}
        assert above <= {"lbmgmt"}, f"{name} reaches {sorted(above)}"
