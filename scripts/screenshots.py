"""Write docs/screenshots/*.svg: each lb-console screen, on the recorded answers the
snapshot tests use.  Run from the repository root: python scripts/screenshots.py"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.tui.screens import SCREENS, SIZE, console  # noqa: E402


async def shoot(name: str) -> Path:
    kind, setup = SCREENS[name]
    app = console(kind)
    async with app.run_test(size=SIZE) as pilot:
        await setup(pilot)
        path = app.save_screenshot(f"{name}.svg", path=str(ROOT / "docs" / "screenshots"))
    return Path(path)


def main() -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    for name in SCREENS:
        print(asyncio.run(shoot(name)))


if __name__ == "__main__":
    main()
