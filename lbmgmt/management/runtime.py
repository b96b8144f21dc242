"""The process itself, as JConsole's Overview, Memory and Threads tabs show a JVM.

``lbmgmt:type=Runtime`` on both daemons: uptime, version, Python and event
loop, CPU %, resident memory, open file descriptors, asyncio tasks, event-loop
lag and garbage collections. ``RuntimeStats`` is the arithmetic (samples in,
figures out, time passed in); ``RuntimeWatch`` is the task that feeds it: every
``TICK`` seconds it sleeps and measures how late it woke (the lag any request
would have met then) and reads the process's CPU time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import platform
import resource
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lbmgmt import __version__
from lbmgmt.management.mbean import MBean, attribute

TICK = 0.25  # seconds between two lag samples
LAG_WINDOW = 60.0  # seconds of lag samples the quantiles cover
CPU_WINDOW = 5.0  # seconds the CPU % is averaged over
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(slots=True)
class RuntimeStats:
    """Lag and CPU samples over a sliding window; pure (every ``now`` is passed in)."""

    lags: deque[tuple[float, float]] = field(default_factory=deque)  # (at, lag s)
    cpu: deque[tuple[float, float]] = field(default_factory=deque)  # (at, CPU s used)

    def record(self, now: float, lag: float, cpu_seconds: float) -> None:
        self.lags.append((now, max(0.0, lag)))
        while self.lags and self.lags[0][0] < now - LAG_WINDOW:
            self.lags.popleft()
        self.cpu.append((now, cpu_seconds))
        while len(self.cpu) > 2 and self.cpu[1][0] <= now - CPU_WINDOW:
            self.cpu.popleft()

    def lag_ms(self) -> dict[str, float]:
        """p50, p99 and max of the event loop's lag over the last minute, in ms."""
        values = sorted(lag for _, lag in self.lags)
        if not values:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}

        def quantile(q: float) -> float:
            return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)
        return {"p50": quantile(0.50), "p99": quantile(0.99),
                "max": round(values[-1] * 1000, 2)}

    def cpu_percent(self) -> float:
        """CPU time used per wall second over the last few seconds, in % of one core."""
        if len(self.cpu) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self.cpu[0], self.cpu[-1]
        return round(100 * (c1 - c0) / (t1 - t0), 1) if t1 > t0 else 0.0


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def rss_bytes() -> int:
    """Resident memory now (Linux: /proc/self/statm; elsewhere the peak, as getrusage has)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listing them
    except OSError:
        return -1


def loop_kind(loop: asyncio.AbstractEventLoop) -> str:
    module = type(loop).__module__.split(".")[0]
    if module == "uvloop":
        import uvloop

        return f"uvloop {uvloop.__version__}"
    return f"asyncio ({type(loop).__name__})"


class RuntimeWatch:
    """Samples the loop's lag and the CPU time every ``TICK`` s while running."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.stats = RuntimeStats()
        self.monotonic = monotonic
        self.started = monotonic()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._watch(), name="runtime-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            before = self.monotonic()
            await asyncio.sleep(TICK)
            now = self.monotonic()
            self.stats.record(now, now - before - TICK, cpu_seconds())


class RuntimeMBean(MBean):
    """``lbmgmt:type=Runtime``: the daemon's process."""

    def __init__(self, watch: RuntimeWatch) -> None:
        self.watch = watch

    @attribute("number", "Seconds since the management port started", unit="s")
    def Uptime(self) -> float:
        return round(self.watch.monotonic() - self.watch.started, 3)

    @attribute("string", "lbmgmt version", metric=None)
    def Version(self) -> str:
        return __version__

    @attribute("string", "Python implementation and version", metric=None)
    def Python(self) -> str:
        return f"{platform.python_implementation()} {platform.python_version()}"

    @attribute("string", "The event loop: uvloop (and its version) or asyncio's own",
               metric=None)
    def EventLoop(self) -> str:
        return loop_kind(self.watch.loop) if self.watch.loop is not None else "not running"

    @attribute("integer", "Process id", metric=None)
    def Pid(self) -> int:
        return os.getpid()

    @attribute("number", "CPU used over the last 5 s, in % of one core", unit="%")
    def CpuPercent(self) -> float:
        return self.watch.stats.cpu_percent()

    @attribute("number", "CPU seconds used since start (user + system)", unit="s",
               metric="counter")
    def CpuSeconds(self) -> float:
        return round(cpu_seconds(), 3)

    @attribute("integer", "Resident memory", unit="bytes")
    def Rss(self) -> int:
        return rss_bytes()

    @attribute("integer", "Open file descriptors (sockets included)")
    def OpenFileDescriptors(self) -> int:
        return open_fds()

    @attribute("integer", "asyncio tasks alive (one per connection being served, and more)")
    def Tasks(self) -> int:
        return len(asyncio.all_tasks(self.watch.loop)) if self.watch.loop is not None else 0

    @attribute("object", "How late the event loop ran a timer over the last minute: p50, "
               "p99 and max, in ms, of 4 samples a second: what any request met on top of "
               "its own work", unit="ms", metric_label="quantile")
    def LoopLag(self) -> dict[str, float]:
        return self.watch.stats.lag_ms()

    @attribute("object", "Garbage collections since start, by generation",
               metric="counter", metric_label="generation")
    def GcCollections(self) -> dict[str, int]:
        return {str(i): s["collections"] for i, s in enumerate(gc.get_stats())}
