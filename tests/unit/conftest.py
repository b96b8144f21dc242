"""Fixtures more than one unit test file takes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.test_edge_streams import Balancer


@pytest.fixture
async def balancer() -> AsyncIterator[Balancer]:
    """A UDP socket on loopback that opens an edge's reports, as a balancer would."""
    lb = await Balancer().start()
    try:
        yield lb
    finally:
        lb.close()
