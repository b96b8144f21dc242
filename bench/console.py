"""How fast lb-console answers keys while a daemon hangs, against a daemon that answers.

    python -m bench.console [--rounds 20]

The console runs headless (Textual's pilot) attached to a management port that
accepts connections and never answers; the baseline in the same run is the
same console attached to a live in-process balancer with three edges. Each
round presses 2, 3, 4, 1, ? and escape and times each, from the key event posted
to the app until the screen shows its effect (the tab switched, the help open or
closed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

from textual.widgets import TabbedContent

from lbmgmt.fleet.inprocess import InProcessFleet
from lbmgmt.fleet.ports import HOST
from tui.app import HelpScreen, LbConsole
from tui.connection import ManagementTarget

KEYS = (("2", "mbeans"), ("3", "charts"), ("4", "notifications"), ("1", "overview"),
        ("question_mark", "help"), ("escape", "no help"))


async def press_times(port: int, rounds: int) -> list[float]:
    app = LbConsole([ManagementTarget(f"{HOST}:{port}")], interval=0.25)
    times: list[float] = []
    loop = asyncio.get_running_loop()
    async with app.run_test(size=(140, 40)) as pilot:
        tabs = app.query_one(TabbedContent)

        def shown(effect: str) -> bool:
            if effect == "help":
                return isinstance(app.screen, HelpScreen)
            if effect == "no help":
                return not isinstance(app.screen, HelpScreen)
            return tabs.active == effect
        for _ in range(rounds):
            for key, effect in KEYS:
                # Post the key as the terminal driver would (pilot.press also waits for
                # animations to settle, which is not what a user waits for), then poll.
                start = loop.time()
                app.simulate_key(key)
                while not shown(effect):
                    await asyncio.sleep(0.0005)
                times.append(loop.time() - start)
                await pilot.pause()  # let the screen settle before the next key
    return times


async def run(rounds: int) -> dict[str, list[float]]:
    hung = await asyncio.start_server(lambda r, w: None, HOST, 0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with InProcessFleet(Path(tmp)) as fleet:
                await fleet.start_balancer()
                for n in range(3):
                    await fleet.add_edge(f"edge{n}", n)
                live = await press_times(fleet.mgmt_port, rounds)
            hanging = await press_times(hung.sockets[0].getsockname()[1], rounds)
    finally:
        hung.close()
    return {"live daemon (baseline)": live, "hanging daemon": hanging}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    results = asyncio.run(run(args.rounds))
    print(f"{'console attached to':<24}{'median ms':>10}{'p99 ms':>9}{'max ms':>9}")
    for label, times in results.items():
        ordered = sorted(times)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(f"{label:<24}{statistics.median(times) * 1000:>10.1f}{p99 * 1000:>9.1f}"
              f"{max(times) * 1000:>9.1f}")
    print(json.dumps({"bench": "console", "rounds": args.rounds,
                      **{label: {"median_ms": round(statistics.median(t) * 1000, 1),
                                 "max_ms": round(max(t) * 1000, 1)}
                         for label, t in results.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
