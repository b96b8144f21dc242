"""The two clocks a daemon reads, in one injectable pair.

``wall`` stamps and checks report timestamps (edges and balancers compare
theirs); ``monotonic`` measures timeouts and intervals. Tests pass their own
to drive time by hand; the sans-IO cores never read either, they are handed
the values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Clocks:
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
