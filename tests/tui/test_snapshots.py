"""Snapshot tests of lb-console's screens (pytest-textual-snapshot), on recorded answers.

Update after an intended change with ``./scripts/test tests/tui --snapshot-update`` and
look at the report; then refresh docs/screenshots with ``python scripts/screenshots.py``.
"""

from __future__ import annotations

import time

import pytest

from tests.tui.screens import SCREENS, SIZE, console


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")  # notification times are shown in local time
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(snap_compare, screen):
    kind, setup = SCREENS[screen]
    assert snap_compare(console(kind), terminal_size=SIZE, run_before=setup)
