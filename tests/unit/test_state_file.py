"""The state file, sans-IO: a restarted core drops what the old one had seen and serves its
pool at once; a file it cannot trust is refused whole. Then the daemon keeping it."""

from __future__ import annotations

import re

import asyncio
import uuid
from pathlib import Path

import pytest

from lbmgmt.balancer.config import BalancerConfig, HttpConfig
from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.daemon import BalancerDaemon
from lbmgmt.balancer.mbeans import BALANCER_NAME
from lbmgmt.balancer.state import StateFileError, restore, state_steps
from lbmgmt.clocks import Clocks
from lbmgmt.endpoints import Endpoint
from lbmgmt.fleet.ports import HOST
from lbmgmt.status import DropReason, EdgeState, Report, ReportSealer, SharedKey
from lbmgmt.steps import finish

KEY = SharedKey("state-file-key")
WALL = 1_800_000_000.0


def new_core(key: SharedKey = KEY) -> BalancerCore:
    return BalancerCore(key, timeout=5.0, grace=0.5, max_clock_skew=30.0)


def report(sealer: ReportSealer, address: str, load: float = 0, *, at: float,
           state: EdgeState = EdgeState.RUNNING) -> bytes:
    return sealer.seal(Report(state, address, load, 2500), KEY, now=WALL + at)


def a_pool() -> tuple[BalancerCore, dict[str, ReportSealer], list[bytes]]:
    """A core that took reports from three edges (one paused, one drained) at t=0..2."""
    core = new_core()
    sealers = {name: ReportSealer(uuid.UUID(int=i + 1))
               for i, name in enumerate(("a", "b", "c"))}
    taken = []
    for t, (name, state) in enumerate((("a", EdgeState.RUNNING), ("b", EdgeState.PAUSED),
                                       ("c", EdgeState.RUNNING))):
        datagram = report(sealers[name], f"{name}:1935", t, at=t, state=state)
        core.receive_datagram(datagram, now=100 + t, wall=WALL + t)
        taken.append(datagram)
    core.drain(sealers["c"].guid)
    core.redirect("http", now=102)
    return core, sealers, taken


def test_a_restarted_core_serves_the_saved_pool_and_drops_what_it_had_seen():
    old, sealers, taken = a_pool()
    data = finish(state_steps(old, now=103, wall=WALL + 3))
    new = new_core()
    # the new process's monotonic clock starts elsewhere; 2 s have passed
    restored = restore(new, data, now=7, wall=WALL + 5)
    assert (restored.servers, restored.marks, restored.too_old) == (3, 3, 0)
    rows = {row.address: row for row in new.status(now=7).servers}
    assert rows["a:1935"].available and rows["a:1935"].redirects_since_report == 0
    assert rows["b:1935"].state == "PAUSED" and not rows["b:1935"].available
    assert rows["c:1935"].drained and not rows["c:1935"].available
    assert rows["a:1935"].seconds_since_report == pytest.approx(5)  # its age, kept
    assert new.registry.get(sealers["a"].guid).redirects_total == 1
    assert new.redirect("http", now=7).address == "a:1935"  # at once: no 503 gap
    for datagram in taken:  # every datagram the old process took: a replay now
        new.receive_datagram(datagram, now=7, wall=WALL + 5)
    assert new.receiver.drops[DropReason.REPLAY] == 3 and new.receiver.accepted == 0
    new.receive_datagram(report(sealers["a"], "a:1935", 1, at=5), now=7, wall=WALL + 5)
    assert new.receiver.accepted == 1  # the edge's next report is taken as ever


def test_a_stopped_edge_cannot_be_replayed_back_after_a_restart():
    old, sealers, taken = a_pool()
    stop = report(sealers["a"], "a:1935", at=3, state=EdgeState.STOPPING)
    old.receive_datagram(stop, now=103, wall=WALL + 3)
    data = finish(state_steps(old, now=103, wall=WALL + 3))
    new = new_core()
    restore(new, data, now=0, wall=WALL + 4)
    assert new.registry.get(sealers["a"].guid) is None
    new.receive_datagram(taken[0], now=0, wall=WALL + 4)  # a's running report, captured
    assert new.registry.get(sealers["a"].guid) is None
    assert new.receiver.drops[DropReason.REPLAY] == 1


def test_edges_past_their_time_and_senders_past_the_skew_window_are_left():
    old, _, _ = a_pool()
    data = finish(state_steps(old, now=103, wall=WALL + 3))
    new = new_core()
    restored = restore(new, data, now=0, wall=WALL + 12.1)  # a: 12.1 s silent, past 11.25
    assert (restored.servers, restored.too_old) == (2, 1)
    later = new_core()
    restored = restore(later, data, now=0, wall=WALL + 61)  # 2 × 30 s of skew window
    assert restored.marks == 2 and later.receiver.peer_count == 2


def test_a_clock_gone_back_past_the_save_keeps_the_marks_not_the_pool():
    old, _, taken = a_pool()
    data = finish(state_steps(old, now=103, wall=WALL + 3))
    new = new_core()
    restored = restore(new, data, now=0, wall=WALL + 1)  # before the save: age unknown
    assert (restored.servers, restored.too_old, restored.marks) == (0, 3, 3)
    new.receive_datagram(taken[0], now=0, wall=WALL + 1)
    assert new.receiver.drops[DropReason.REPLAY] == 1


def test_a_report_taken_while_the_file_is_packed_is_never_taken_again():
    old, sealers, _ = a_pool()
    steps = state_steps(old, now=103, wall=WALL + 3, per_step=1)
    next(steps)  # the first server packed; then a new report of "a" arrives
    late = report(sealers["a"], "a:1935", 9, at=3)
    old.receive_datagram(late, now=103, wall=WALL + 3)
    data = finish(steps)
    new = new_core()
    restore(new, data, now=0, wall=WALL + 4)
    new.receive_datagram(late, now=0, wall=WALL + 4)  # replayed after a crash
    assert new.receiver.drops[DropReason.REPLAY] == 1 and new.receiver.accepted == 0


def test_packing_a_slice_at_a_time_gives_the_same_bytes():
    old, _, _ = a_pool()
    steps = state_steps(old, now=103, wall=WALL + 3, per_step=1)
    turns = 0
    while True:
        try:
            next(steps)
            turns += 1
        except StopIteration as done:
            sliced = done.value
            break
    assert turns == 6  # one record per turn: 3 marks, 3 servers
    assert sliced == finish(state_steps(old, now=103, wall=WALL + 3))


@pytest.mark.parametrize("damage", ["flip", "cut", "other key", "not ours"])
def test_a_file_it_cannot_trust_is_refused_whole(damage):
    old, _, _ = a_pool()
    data = finish(state_steps(old, now=103, wall=WALL + 3))
    core = new_core()
    if damage == "flip":
        data = data[:40] + bytes([data[40] ^ 1]) + data[41:]
    elif damage == "cut":
        data = data[:-5]
    elif damage == "other key":
        core = new_core(SharedKey("another fleet's key"))
    else:
        data = b"not a state file at all, but long enough to have a MAC at its end...."
    with pytest.raises(StateFileError) as refused:
        restore(core, data, now=0, wall=WALL + 4)
    assert "state-file-key" not in str(refused.value)
    assert len(core.registry) == 0 and core.receiver.peer_count == 0


# -- the daemon keeping it ----------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.wall, self.mono = WALL, 1000.0

    def clocks(self) -> Clocks:
        return Clocks(wall=lambda: self.wall, monotonic=lambda: self.mono)


def daemon(path: Path, clock: Clock) -> BalancerDaemon:
    return BalancerDaemon(BalancerConfig(key=KEY, listen=Endpoint(HOST, 0),
                                         http=HttpConfig(listen=(Endpoint(HOST, 0),)),
                                         state_file=path), clocks=clock.clocks())


async def until(predicate, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_a_balancer_saves_while_it_runs_and_at_stop_and_starts_warm(tmp_path, caplog):
    path = tmp_path / "lb.state"
    clock = Clock()
    first = daemon(path, clock)
    await first.start()
    try:
        sealer = ReportSealer(uuid.UUID(int=7))
        first.core.receive_datagram(report(sealer, "e:1935", at=0), now=clock.mono,
                                    wall=clock.wall)
        await until(lambda: first.state.saved >= 1)  # within a second, unasked
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        await first.stop()
    assert first.state.saved >= 2  # and once more at stop
    clock.wall += 3
    clock.mono += 3
    second = daemon(path, clock)
    await second.start()
    try:
        assert second.state.restored is not None and second.state.restored.servers == 1
        assert second.core.redirect("http", clock.mono).address == "e:1935"
        attrs = second.mbeans.get_attribute(BALANCER_NAME, "StateFile")
        assert attrs["restoredServers"] == 1 and attrs["path"] == str(path)
    finally:
        await second.stop()


async def test_a_file_it_cannot_take_is_said_and_the_balancer_starts_empty(tmp_path, caplog):
    path = tmp_path / "lb.state"
    path.write_bytes(b"garbage" * 20)
    balancer = daemon(path, Clock())
    await balancer.start()
    try:
        assert len(balancer.core.registry) == 0
        assert balancer.state.refused is not None
        [said] = [r for r in caplog.records if r.getMessage().startswith("state file not taken")]
        assert said.levelname == "WARNING" and said.fields["path"] == str(path)  # type: ignore[attr-defined]
    finally:
        await balancer.stop()


async def test_a_state_file_that_cannot_be_written_is_counted_and_said(tmp_path, caplog):
    (tmp_path / "a-file").write_text("")  # where the state file's directory should be
    path = tmp_path / "a-file" / "lb.state"
    clock = Clock()
    balancer = daemon(path, clock)
    await balancer.start()
    try:
        balancer.core.receive_datagram(report(ReportSealer(uuid.UUID(int=8)), "e:1", at=0),
                                       now=clock.mono, wall=clock.wall)
        await until(lambda: balancer.state.failed >= 1)
        saves = balancer.mbeans.get_attribute(BALANCER_NAME, "StateFileSaves")
        assert saves["failed"] >= 1 and saves["saved"] == 0
        [said] = [r for r in caplog.records if r.getMessage().startswith("state file not saved")]
        assert said.levelname == "WARNING"
    finally:
        await balancer.stop()


@pytest.mark.parametrize(("line", "expected"), [
    ("", "STATE/lb.state"),  # unset: the state directory, named for the config
    ('state_file = "var/pool.state"\n', "var/pool.state"),  # relative to the config
    ('state_file = ""\n', None),  # none kept
])
def test_the_state_file_is_in_the_state_directory_unless_set(tmp_path, line, expected):
    from lbmgmt.balancer.config import load_balancer_config
    from lbmgmt.statedir import state_directory
    config = tmp_path / "lb.toml"
    config.write_text(f'[balancer]\nkey = "k-0123456789abcdef"\n{line}')
    got = load_balancer_config(config).state_file
    if expected is not None and expected.startswith("STATE/"):
        assert got is not None and got.parent == state_directory()
        assert re.fullmatch(r"lb-[0-9a-f]{8}\.state", got.name)
    else:
        assert got == (None if expected is None else tmp_path / expected)
