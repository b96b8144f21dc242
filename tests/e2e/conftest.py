from __future__ import annotations

import aiohttp
import pytest

from tests.e2e.fleet import Fleet


@pytest.fixture
async def fleet(tmp_path):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        f = Fleet(tmp_path, session)
        try:
            yield f
        finally:
            f.cleanup()
