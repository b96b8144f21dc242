"""The fixture the console's pilot tests share: a balancer in the test's own loop."""

from __future__ import annotations

import pytest

from tests.tui.test_console import Daemons


@pytest.fixture
async def daemons(tmp_path):
    d = Daemons(tmp_path)
    await d.start()
    yield d
    await d.stop()
