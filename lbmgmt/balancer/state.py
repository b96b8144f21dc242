"""The balancer's state file, sans-IO: replay marks and the last pool, kept across restarts.

Without it a restarted balancer knows no sender: a datagram captured before the restart
and still inside ``max_clock_skew_ms`` would be taken again (a stopped edge back in the
pool), and every client would get 503 until the edges' next reports. With it the new
process drops whatever the old one had seen (the replay marks) and serves the pool the old
one had (entries still within their time) from its first request.

``state_steps`` packs the core's state into bytes a slice at a time (the daemon writes them
atomically, at most once a second and at stop); ``restore`` takes them back into a fresh
core. The bytes end with an HMAC under a key derived from the shared key, so a file from
another fleet (or a torn or edited one) is refused whole, never half taken.

Layout (big-endian): header ``magic, saved_at_ms, marks, servers, drained``; then each
replay mark ``guid, boot, sequence, timestamp_ms, last_seen_ms, retired count, retired
boots``; each server ``guid, boot, last_report_ms, first_seen_ms, sent_at_ms,
reports_received, redirects_total, flags, payload length, payload`` (the report as it
came); each drained GUID; the MAC. Times are the balancer's wall clock in ms.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import uuid
from dataclasses import dataclass
from typing import Any

from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.registry import RegistryEvent, ServerEntry
from lbmgmt.status import ReplayMark
from lbmgmt.status.wire import MalformedPayload, decode_payload
from lbmgmt.steps import Steps

MAGIC = b"LBMGMTS1"
HEADER = struct.Struct(">8sqIII")
MARK = struct.Struct(">16s8sQqqB")
SERVER = struct.Struct(">16s8sqqqIIBH")
FLAG_DRAINED = 1
MAC_SIZE = 32
MAC_LABEL = b"lbmgmt/balancer/state/v1"
PER_STEP = 1000  # records packed between two turns of the loop


class StateFileError(ValueError):
    """The bytes are not a state file this balancer wrote (says why; never the key)."""


@dataclass(frozen=True, slots=True)
class Restored:
    """What ``restore`` took back, and what it left."""

    saved_at: float  # wall clock of the save, seconds
    marks: int
    servers: int
    too_old: int  # servers past their time by now


def _mac(master: bytes, body: bytes) -> bytes:
    key = hmac.new(master, MAC_LABEL, hashlib.sha256).digest()
    return hmac.new(key, body, hashlib.sha256).digest()


def state_steps(core: BalancerCore, *, now: float, wall: float,
                per_step: int = PER_STEP) -> Steps[bytes]:
    """The core's replay marks, pool and drained GUIDs as state-file bytes, packed
    ``per_step`` records at a time (a generator for ``steps.finish[_between_turns]``).
    ``now`` is the monotonic clock the registry's times are on, ``wall`` the wall clock
    at the same instant."""
    # The servers first, the replay marks last: a report taken between two slices may put
    # a newer payload in the file, but never a mark older than what the file holds (marks
    # only move forward), so no report in the file can be taken again after a restart.
    server_parts: list[bytes] = []
    servers = list(core.registry)
    pack_mark, pack_server = MARK.pack, SERVER.pack
    to_wall = wall - now
    for start in range(0, len(servers), per_step):
        for e in servers[start:start + per_step]:
            payload = e.payload
            server_parts.append(pack_server(
                e.guid.bytes, e.boot_id, round((e.last_report + to_wall) * 1000),
                round((e.first_seen + to_wall) * 1000), round(e.sent_at * 1000),
                min(e.reports_received, 0xFFFFFFFF), min(e.redirects_total, 0xFFFFFFFF),
                FLAG_DRAINED if e.drained else 0, len(payload)))
            server_parts.append(payload)
        yield
    marks = list(core.receiver.marks())
    mark_parts: list[bytes] = []
    for start in range(0, len(marks), per_step):
        for m in marks[start:start + per_step]:
            mark_parts.append(pack_mark(m.guid, m.boot_id, m.sequence, m.timestamp_ms,
                                        round(m.last_seen * 1000), len(m.retired)))
            mark_parts.extend(m.retired)
        yield
    drained = list(core.registry.drained)
    body = b"".join([HEADER.pack(MAGIC, round(wall * 1000), len(marks), len(servers),
                                 len(drained)), *mark_parts, *server_parts,
                     *(guid.bytes for guid in drained)])
    return body + _mac(core.receiver.master_key, body)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, layout: struct.Struct) -> tuple[Any, ...]:
        if self.at + layout.size > len(self.data):
            raise StateFileError("cut short")
        values = layout.unpack_from(self.data, self.at)
        self.at += layout.size
        return values

    def raw(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise StateFileError("cut short")
        value = self.data[self.at:self.at + n]
        self.at += n
        return value


def restore(core: BalancerCore, data: bytes, *, now: float, wall: float) -> Restored:
    """Take a state file's marks and pool into ``core`` (a fresh one, before its first
    datagram): marks whose senders are silent past twice the skew window are left (their
    datagrams are stale anyway), and servers past their time by ``now``, or all of them if
    ``wall`` is before the save (the clock went back: their age is unknown). Raises
    StateFileError, having taken nothing, if the bytes are not a state file written under
    this core's key."""
    if len(data) < HEADER.size + MAC_SIZE:
        raise StateFileError("too short to be a state file")
    body, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
    if body[:len(MAGIC)] != MAGIC:
        raise StateFileError("not an lbmgmt balancer state file (or another version)")
    if not hmac.compare_digest(mac, _mac(core.receiver.master_key, body)):
        raise StateFileError("written under another key, or damaged")
    reader = _Reader(body)
    _, saved_ms, n_marks, n_servers, n_drained = reader.take(HEADER)
    marks: list[ReplayMark] = []
    for _ in range(n_marks):
        guid, boot, seq, ts_ms, seen_ms, n_retired = reader.take(MARK)
        retired = tuple(reader.raw(8) for _ in range(n_retired))
        marks.append(ReplayMark(guid, boot, seq, ts_ms, seen_ms / 1000, retired))
    saved: list[tuple[tuple[Any, ...], bytes]] = []
    for _ in range(n_servers):
        record = reader.take(SERVER)
        saved.append((record, reader.raw(record[-1])))
    drained = [uuid.UUID(bytes=reader.raw(16)) for _ in range(n_drained)]
    if reader.at != len(body):
        raise StateFileError("trailing bytes")

    horizon = wall - 2 * core.receiver.max_age
    kept = sorted((m for m in marks if m.last_seen >= horizon), key=lambda m: m.last_seen)
    for mark in kept:  # oldest first: the receiver forgets from the front
        core.receiver.restore_mark(mark)
    registry = core.registry
    registry.drained.update(drained)
    events: list[RegistryEvent] = []
    too_old = 0
    if wall < saved_ms / 1000:
        # The clock went back past the save: how long the balancer was down is unknown,
        # and the pool may be any age. The marks still hold (they never let more in).
        saved_pool, saved = saved, []
        too_old = len(saved_pool)
    saved.sort(key=lambda s: s[0][2])  # least recently heard first, as the registry files
    for (guid, boot, last_ms, first_ms, sent_ms, received, redirects, _flags, _n), payload \
            in saved:
        try:
            report = decode_payload(payload)
        except MalformedPayload:
            too_old += 1
            continue
        age = max(0.0, wall - last_ms / 1000)
        if age > registry.leave_after(report.interval_ms / 1000):
            too_old += 1
            continue
        entry = ServerEntry(guid=uuid.UUID(bytes=guid), boot_id=boot, report=report,
                            first_seen=now - max(0.0, wall - first_ms / 1000),
                            last_report=now - age, sent_at=sent_ms / 1000,
                            reports_received=received, redirects_total=redirects,
                            payload=payload)
        events.extend(registry.restore(entry))
    # (drained comes from the drained GUIDs above: kept across an edge's restarts too)
    core.emit(events)
    return Restored(saved_at=saved_ms / 1000, marks=len(kept), servers=len(events),
                    too_old=too_old)


@dataclass(slots=True)
class StateKeeping:
    """How keeping the state file goes, for management: the shell fills it in."""

    path: str | None  # None: no state file kept
    saved: int = 0
    failed: int = 0
    last_saved_at: float | None = None  # wall clock, seconds
    saved_revision: int = -1  # the core's revision the last save holds
    last_error: str | None = None
    restored: Restored | None = None
    refused: str | None = None  # why the file found at start was not taken
