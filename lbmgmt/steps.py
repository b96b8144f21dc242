"""Work done in steps, so that an event loop can run between them.

A step generator (``Steps[T]``) yields between steps and returns its result:
``serverinfo.server_info_steps`` and ``management.metrics.metrics_steps`` make
their big pages so. ``finish`` runs one through at once (small pages, tests);
``finish_between_turns`` lets everything else that is ready run between steps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")
Steps = Generator[None, None, T]


def finish(steps: Steps[T]) -> T:
    """Every step at once; the result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result


async def finish_between_turns(steps: Steps[T]) -> T:
    """Every step, the loop running whatever else is ready between two; the result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
        await asyncio.sleep(0)
