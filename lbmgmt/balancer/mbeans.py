"""The balancer's MBeans: the balancer itself and one per known edge.

A management view of the core (and of the clocks, to say "now"): it never sees
the daemon. ``BalancerBeans`` keeps the MBean server in step with the registry:
a Server MBean is registered when an edge joins and unregistered when it leaves,
and every registry event becomes a notification.
"""

from __future__ import annotations

import uuid
from typing import Any

from lbmgmt.balancer.config import (AFFINITY_FLOOR, GRACE, MAX_SILENCE, MESSAGE_TIMEOUT,
                                    MISSED_REPORTS, PEERS)
from lbmgmt.balancer.core import BalancerCore, ServerStatus
from lbmgmt.balancer.redirectors import BUILTIN_REDIRECTORS
from lbmgmt.balancer.state import StateKeeping
from lbmgmt.balancer.registry import (RegistryEvent, ServerCannotStay, ServerDrainChanged,
                                      ServerEntry, ServerJoined, ServerLeft,
                                      ServerStateChanged)
from lbmgmt.clocks import Clocks
from lbmgmt.management import notifications as note
from lbmgmt.management.errors import UnknownMBean
from lbmgmt.management.mbean import Impact, MBean, attribute, operation
from lbmgmt.management.objectname import ObjectName
from lbmgmt.management.server import MBeanServer
from lbmgmt.plugins import PluginError
from lbmgmt.status import EdgeState

BALANCER_NAME = ObjectName.parse("lbmgmt:type=Balancer")
DROP_NOTIFY_INTERVAL = 5.0  # at most one dropped-reports notification per this many seconds
# Joins and leaves are notified one by one up to this rate (and burst); past it, as one
# notification per type per sweep that counts them and names the first COALESCED_NAMED,
# so that a fleet coming or going at once does not push everything else out of the buffer.
CHURN_RATE = 20.0
CHURN_BURST = 100.0
COALESCED_NAMED = 50


def server_name(guid: uuid.UUID | str) -> ObjectName:
    return ObjectName.of("lbmgmt", type="Server", guid=str(guid))


def _guid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValueError(f"not a GUID: {text!r}") from None


def server_summary(row: ServerStatus) -> dict[str, Any]:
    return {"guid": str(row.guid), "redirectAddress": row.address, "state": row.state,
            "available": row.available, "drained": row.drained, "load": row.load,
            "capacity": row.capacity, "redirectsSinceReport": row.redirects_since_report,
            "secondsSinceReport": round(row.seconds_since_report, 3),
            "intervalMs": round(row.interval * 1000),
            "reportsReceived": row.reports_received, "agent": row.agent,
            "unhealthy": row.unhealthy, "clockOffsetMs": round(row.clock_offset * 1000),
            "lastDrop": row.last_drop, "suspectMs": round(row.suspect_for * 1000),
            "group": row.group, "privateAddress": row.private_address,
            "bandwidth": row.bandwidth, "bandwidthLimit": row.bandwidth_limit,
            "maxClients": row.max_clients, "streams": row.streams,
            "redirectsTotal": row.redirects_total}


class BalancerMBean(MBean):
    """A balancer: the pool of edges it redirects clients to."""

    notification_types = (note.SERVER_JOINED, note.SERVER_LEFT, note.SERVER_PAUSED,
                          note.SERVER_UNPAUSED, note.SERVER_DRAINED, note.SERVER_UNDRAINED,
                          note.SERVER_CANNOT_STAY, note.REPORTS_DROPPED,
                          note.ATTRIBUTE_CHANGE)

    def __init__(self, core: BalancerCore, clocks: Clocks,
                 state: StateKeeping | None = None) -> None:
        self.core = core
        self.clocks = clocks
        self.state = state if state is not None else StateKeeping(None)

    @attribute("string", "UDP address edge reports arrive on", metric=None)
    def ListenAddress(self) -> str:
        return self.core.addresses.get("udp", "-")

    @attribute("string", "HTTP address clients ask for redirects on", metric=None)
    def HttpAddress(self) -> str:
        return self.core.addresses.get("http", "-")

    @attribute.of(MESSAGE_TIMEOUT)
    def MessageTimeout(self) -> int:
        return round(self.core.registry.timeout * 1000)

    @MessageTimeout.setter
    def _set_message_timeout(self, value: int) -> None:
        self.core.registry.timeout = value / 1000

    @attribute("string", "Strategy choosing the edge for each new client: "
                         + ", ".join(BUILTIN_REDIRECTORS) + ", or the module:Class the "
                         "config file named (no other code is loaded over management)",
               metric=None)
    def Redirector(self) -> str:
        return self.core.redirector_spec

    @Redirector.setter
    def _set_redirector(self, value: str) -> None:
        if value not in BUILTIN_REDIRECTORS and value != self.core.configured_redirector:
            raise ValueError("Redirector over management takes "
                             + ", ".join(BUILTIN_REDIRECTORS) + " or the one the config file "
                             "names: a module:Class is named only in the config file")
        try:
            self.core.set_redirector(value)
        except PluginError as exc:
            raise ValueError(str(exc)) from None

    @attribute("boolean", "Stream affinity for every redirector: a named stream's viewers "
               "go to an edge that carries it, within BalanceFactor of the mean load "
               "(the stream-affinity redirector has it whatever this says)")
    def Affinity(self) -> bool:
        return self.core.affinity_option

    @Affinity.setter
    def _set_affinity(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"Affinity must be true or false, not {value!r}")
        self.core.set_affinity(value)

    @attribute("number", "With stream affinity, an edge takes a stream's viewer while its "
               "load stays within this factor of the mean (more than 1; 1.25: 25 % over)")
    def BalanceFactor(self) -> float:
        return self.core.stream_affinity.balance_factor

    @BalanceFactor.setter
    def _set_balance_factor(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"BalanceFactor must be a number, not {value!r}")
        self.core.set_affinity(self.core.affinity_option, float(value))

    @attribute.of(AFFINITY_FLOOR)
    def AffinityFloor(self) -> int:
        return self.core.stream_affinity.floor

    @AffinityFloor.setter
    def _set_affinity_floor(self, value: int) -> None:
        self.core.stream_affinity.floor = value

    @attribute.of(PEERS)
    def Peers(self) -> int:
        return self.core.stream_affinity.peers

    @Peers.setter
    def _set_peers(self, value: int) -> None:
        self.core.stream_affinity.peers = value

    @attribute("object", "Viewers of a named stream by how stream affinity chose: an edge "
               "carrying it (carrier), the stream's ring (ring), or, no edge under the "
               "bound, the redirector (fallback)", metric="counter", metric_label="how")
    def StreamChoices(self) -> dict[str, int]:
        return dict(self.core.stream_affinity.counters)

    @attribute("object", "For autoscalers: clients the available edges can still take "
               "(capacity or max_clients less load, summed), available edges, and those "
               "of them that report neither (room unknown, not counted)",
               metric_label="what")
    def Headroom(self) -> dict[str, float]:
        return self.core.headroom(self.clocks.monotonic())

    @attribute.of(MISSED_REPORTS)
    def MissedReports(self) -> int:
        return self.core.registry.missed_reports

    @MissedReports.setter
    def _set_missed_reports(self, value: int) -> None:
        self.core.registry.missed_reports = value

    @attribute.of(MAX_SILENCE)
    def MaxSilence(self) -> int:
        return round(self.core.registry.max_silence * 1000)

    @MaxSilence.setter
    def _set_max_silence(self, value: int) -> None:
        self.core.registry.max_silence = value / 1000

    @attribute.of(GRACE)
    def Grace(self) -> int:
        return round(self.core.registry.grace * 1000)

    @Grace.setter
    def _set_grace(self, value: int) -> None:
        self.core.registry.grace = value / 1000

    @attribute("integer", "Edges known (available or not)")
    def ServerCount(self) -> int:
        return len(self.core.registry)

    @attribute("integer", "Edges that would take a new client now")
    def AvailableServerCount(self) -> int:
        return self.core.registry.available_count(self.clocks.monotonic())

    @attribute("integer", "Authenticated reports taken", metric="counter")
    def ReportsReceived(self) -> int:
        return self.core.receiver.accepted

    @attribute("object", "Datagrams dropped, by reason", metric="counter",
               metric_label="reason")
    def ReportsDropped(self) -> dict[str, int]:
        return {str(reason): count for reason, count in self.core.receiver.drops.items()}

    @attribute("boolean", "The report port is overloaded (the kernel drops datagrams, or "
               "bad ones flood it): no edge leaves the pool meanwhile")
    def ReportPortOverloaded(self) -> bool:
        return self.core.registry.frozen

    @attribute("object", "The report port's overloads: how many, their seconds in all, and "
               "the datagrams the kernel dropped (receive buffer full)", metric="counter",
               metric_label="what")
    def ReportPortOverload(self) -> dict[str, float]:
        o = self.core.overload
        return {"episodes": o.episodes, "seconds": round(o.seconds, 3),
                "kernelDrops": o.kernel_drops}

    @attribute("object", "Redirects handed out, by protocol", metric="counter",
               metric_label="protocol")
    def RedirectsServed(self) -> dict[str, int]:
        return dict(self.core.redirects_served)

    @attribute("object", "Edge groups (regions, sites; \"\" for edges with none): edges, "
               "available ones and clients sent, by group", metric=None)
    def Groups(self) -> dict[str, dict[str, int]]:
        return self.core.group_status(self.clocks.monotonic())

    @attribute("object", "Clients routed by a [routing] rule: sent to one of their groups "
               "(in_group) or, none of those available, to any edge (fallback)",
               metric="counter", metric_label="outcome")
    def Routed(self) -> dict[str, int]:
        return dict(self.core.routed)

    @attribute("object", "Client addresses looked up by the [routing] rules (each once, "
               "then cached) and those the GeoIP database had no country for",
               metric="counter", metric_label="what")
    def RoutingLookups(self) -> dict[str, int]:
        routing = self.core.routing
        return {"lookups": routing.lookups, "geoip_misses": routing.geoip_misses}

    @attribute("string", "RTMP address (the HTTP one when they share a port)", metric=None)
    def RtmpAddress(self) -> str:
        return self.core.addresses.get("rtmp", "off")

    @attribute("object", "RTMP connections: total, active, how each ended, and edges the "
                         "proxy could not reach (edge_unreachable)",
               metric="counter", metric_label="event", gauges=("active",))
    def RtmpConnections(self) -> dict[str, int]:
        return self._front("rtmp")

    @attribute("object", "RTSP on the client port(s): connections, requests, redirects, "
                         "and what was refused or timed out", metric="counter",
               metric_label="event", gauges=("active",))
    def RtspConnections(self) -> dict[str, int]:
        return self._front("rtsp")

    @attribute("object", "RTMPT (RTMP in HTTP) sessions: opened, requests, active, and "
                         "what was dropped (unknown, expired, evicted, too large)",
               metric="counter", metric_label="event", gauges=("active",))
    def RtmptSessions(self) -> dict[str, int]:
        return self._front("rtmpt")

    @attribute("object", "WHIP and WHEP: 307s by kind, CORS preflights, and refusals",
               metric="counter", metric_label="event")
    def WebRtcRequests(self) -> dict[str, int]:
        return self._front("webrtc")

    @attribute("object", "HTTP on the client port: requests, active connections, and "
                         "what was refused or timed out", metric="counter",
               metric_label="event", gauges=("active",))
    def HttpConnections(self) -> dict[str, int]:
        return self._front("http")

    @attribute("object", "Every client connection: accepted, active, refused by a cap "
                         "(total or per address), silent ones timed out", metric="counter",
               metric_label="event", gauges=("active",))
    def ClientConnections(self) -> dict[str, int]:
        return self._front("clients")

    @attribute("object", "The state file (replay marks and the last pool across restarts): "
               "its path (null: none kept), saves, whether the last holds every change, "
               "what the start took from it or why not",
               metric=None)
    def StateFile(self) -> dict[str, Any]:
        st = self.state
        restored = st.restored
        return {"path": st.path, "saved": st.saved, "failed": st.failed,
                "lastSavedAt": st.last_saved_at,
                "upToDate": st.saved_revision == self.core.revision, "lastError": st.last_error,
                "restoredServers": None if restored is None else restored.servers,
                "restoredReplayMarks": None if restored is None else restored.marks,
                "refused": st.refused}

    @attribute("object", "State file saves, by result", metric="counter",
               metric_label="result")
    def StateFileSaves(self) -> dict[str, int]:
        return {"saved": self.state.saved, "failed": self.state.failed}

    def _front(self, name: str) -> dict[str, int]:
        stats = self.core.fronts.get(name)
        return stats.snapshot() if stats is not None else {}

    @operation(Impact.INFO, "Every known edge with its state and load")
    def listServers(self) -> list[dict[str, Any]]:
        return [server_summary(row)
                for row in self.core.status(self.clocks.monotonic()).servers]

    @operation(Impact.INFO, "Senders whose reports were dropped lately, most recent first: "
               "GUID (null for a wrong key: one row per host), source, reason, detail, "
               "clock offset, count, seconds since the first and the last")
    def listDroppedSenders(self) -> list[dict[str, Any]]:
        now = self.clocks.monotonic()
        return [{"guid": None if r.guid is None else str(r.guid), "source": r.source,
                 "reason": r.reason, "detail": r.detail,
                 "clockOffsetMs": None if r.offset is None else round(r.offset * 1000),
                 "count": r.count, "firstSecondsAgo": round(now - r.first, 3),
                 "lastSecondsAgo": round(now - r.last, 3)}
                for r in self.core.dropped_senders.rows()]

    @operation(Impact.ACTION, "No new clients for this edge (kept across its restarts) "
                              "until undrained", guid="the edge's GUID")
    def drainServer(self, guid: str) -> None:
        self.core.drain(_guid(guid), True)

    @operation(Impact.ACTION, "Let a drained edge take new clients again",
               guid="the edge's GUID")
    def undrainServer(self, guid: str) -> None:
        self.core.drain(_guid(guid), False)

    @operation(Impact.ACTION, "Forget an edge now; it comes back with its next report",
               guid="the edge's GUID")
    def removeServer(self, guid: str) -> None:
        self.core.remove(_guid(guid))


class ServerMBean(MBean):
    """One edge as this balancer sees it."""

    def __init__(self, core: BalancerCore, clocks: Clocks, guid: uuid.UUID) -> None:
        self.core = core
        self.clocks = clocks
        self.guid = guid

    @property
    def entry(self) -> ServerEntry:
        entry = self.core.registry.get(self.guid)
        if entry is None:  # left between lookup and read
            raise UnknownMBean(str(server_name(self.guid)))
        return entry

    @attribute("string", "Where clients are sent", metric=None)
    def RedirectAddress(self) -> str:
        return self.entry.address

    @attribute("string", "RUNNING or PAUSED, as the edge reports (DRAINING: paused to "
               "stop once its clients are gone)", metric=None)
    def State(self) -> str:
        return self.entry.state_name

    @attribute("boolean", "Would take a new client now")
    def Available(self) -> bool:
        now = self.clocks.monotonic()
        return self.core.registry.is_available(self.entry, now)

    @attribute("boolean", "Drained on this balancer")
    def Drained(self) -> bool:
        return self.entry.drained

    @attribute("number", "Load in the edge's last report")
    def Load(self) -> float:
        return self.entry.load

    @attribute("number", "Capacity the edge reports (null if none)")
    def Capacity(self) -> float | None:
        return self.entry.capacity

    @attribute("integer", "Clients sent to it since its last report")
    def RedirectsSinceReport(self) -> int:
        return self.entry.redirects_since_report

    @attribute("number", "Seconds since its last report", unit="s")
    def SecondsSinceReport(self) -> float:
        return round(self.entry.seconds_since_report(self.clocks.monotonic()), 3)

    @attribute("integer", "How long it may be silent before it leaves the pool: "
               "MissedReports of its interval, within MessageTimeout and MaxSilence",
               unit="ms")
    def LeaveAfterMs(self) -> int:
        return round(self.entry.leave_after * 1000)

    @attribute("integer", "Reports taken from it", metric="counter")
    def ReportsReceived(self) -> int:
        return self.entry.reports_received

    @attribute("string", "The edge's software and version, as its reports say (null if not)",
               metric=None)
    def Agent(self) -> str | None:
        return self.entry.report.agent

    @attribute("string", "Why the edge takes no clients though its operator did not pause "
               "it (its monitor fails: the media server does not answer); null if healthy",
               metric=None)
    def Unhealthy(self) -> str | None:
        return self.entry.report.unhealthy

    @attribute("integer", "The edge's clock less this balancer's at its last report "
               "(transit included): reports further off than max_clock_skew_ms are dropped",
               unit="ms")
    def ClockOffsetMs(self) -> int:
        return round(self.entry.clock_offset * 1000)

    @attribute("object", "The last of its reports this balancer dropped, and why (replay, "
               "stale, malformed): reason, detail, count, secondsAgo; null if none lately",
               metric=None)
    def LastDrop(self) -> dict[str, Any] | None:
        row = self.core.dropped_senders.last_for(self.guid)
        if row is None:
            return None
        return {"reason": row.reason, "detail": row.detail, "count": row.count,
                "secondsAgo": round(self.clocks.monotonic() - row.last, 3)}

    @operation(Impact.ACTION, "No new clients for this edge until undrained")
    def drain(self) -> None:
        self.core.drain(self.guid, True)

    @operation(Impact.ACTION, "Let this edge take new clients again")
    def undrain(self) -> None:
        self.core.drain(self.guid, False)


class BalancerBeans:
    """Registers the balancer's MBeans and turns registry events into notifications."""

    def __init__(self, core: BalancerCore, clocks: Clocks, server: MBeanServer, *,
                 state: StateKeeping | None = None) -> None:
        self.core = core
        self.clocks = clocks
        self.server = server
        server.register(BALANCER_NAME, BalancerMBean(core, clocks, state))
        for entry in core.registry:
            server.register(server_name(entry.guid), ServerMBean(core, clocks, entry.guid))
        core.listeners.append(self.on_event)
        self._drops_seen = dict(core.receiver.drops)
        self._drops_notified_at = float("-inf")
        self._churn_tokens = CHURN_BURST
        self._churn_at = clocks.monotonic()
        # held back past the rate: type → (how many, the first few {guid, address})
        self._held: dict[str, tuple[int, list[dict[str, str]]]] = {}

    def _emit(self, type_: str, entry: ServerEntry, message: str, **data: Any) -> None:
        self.server.notifications.emit(
            type_, str(BALANCER_NAME), message,
            {"guid": str(entry.guid), "redirectAddress": entry.address, **data},
            now=self.clocks.wall())

    def _churn(self, type_: str, entry: ServerEntry) -> bool:
        """True: notify this join or leave now; False: it was held for a coalesced one."""
        now = self.clocks.monotonic()
        self._churn_tokens = min(CHURN_BURST,
                                 self._churn_tokens + (now - self._churn_at) * CHURN_RATE)
        self._churn_at = now
        if self._churn_tokens >= 1 and not self._held:
            self._churn_tokens -= 1
            return True
        count, named = self._held.get(type_, (0, []))
        if len(named) < COALESCED_NAMED:
            named.append({"guid": str(entry.guid), "redirectAddress": entry.address})
        self._held[type_] = (count + 1, named)
        return False

    def _flush_churn(self) -> None:
        held, self._held = self._held, {}
        for type_, (count, named) in held.items():
            word = "joined" if type_ == note.SERVER_JOINED else "left"
            self.server.notifications.emit(
                type_, str(BALANCER_NAME), f"{count} servers {word} (coalesced)",
                {"coalesced": count, "servers": named}, now=self.clocks.wall())

    def on_event(self, event: RegistryEvent) -> None:
        entry = event.server
        if isinstance(event, ServerJoined):
            self.server.register(server_name(entry.guid),
                                 ServerMBean(self.core, self.clocks, entry.guid))
            if not self._churn(note.SERVER_JOINED, entry):
                return
            if event.restored:
                self._emit(note.SERVER_JOINED, entry,
                           f"{entry.address} taken back from the state file", restored=True)
            elif event.absent_for is None:
                self._emit(note.SERVER_JOINED, entry, f"{entry.address} joined")
            else:
                self._emit(note.SERVER_JOINED, entry,
                           f"{entry.address} rejoined after {event.absent_for:.1f} s",
                           absentMs=round(event.absent_for * 1000))
        elif isinstance(event, ServerLeft):
            self.server.unregister(server_name(entry.guid))
            if not self._churn(note.SERVER_LEFT, entry):
                return
            self._emit(note.SERVER_LEFT, entry, f"{entry.address} left ({event.reason})",
                       reason=str(event.reason))
        elif isinstance(event, ServerStateChanged):
            if event.new is EdgeState.PAUSED:
                self._emit(note.SERVER_PAUSED, entry, f"{entry.address} paused")
            elif event.old is EdgeState.PAUSED:
                self._emit(note.SERVER_UNPAUSED, entry, f"{entry.address} unpaused")
        elif isinstance(event, ServerCannotStay):
            self._emit(note.SERVER_CANNOT_STAY, entry,
                       f"{entry.address} reports every {event.interval:g} s but may be "
                       f"silent only {event.leave_after:g} s: it leaves between reports",
                       intervalMs=round(event.interval * 1000),
                       leaveAfterMs=round(event.leave_after * 1000))
        elif isinstance(event, ServerDrainChanged):
            word = "drained" if event.drained else "undrained"
            kind = note.SERVER_DRAINED if event.drained else note.SERVER_UNDRAINED
            self._emit(kind, entry, f"{entry.address} {word}")

    def tick(self, now: float) -> None:
        """Called by the sweep: joins and leaves held back, coalesced; and one summary of
        new drops per DROP_NOTIFY_INTERVAL at most."""
        if self._held:
            self._flush_churn()
        if now - self._drops_notified_at < DROP_NOTIFY_INTERVAL:
            return
        drops = self.core.receiver.drops
        delta = {str(r): c - self._drops_seen.get(r, 0) for r, c in drops.items()
                 if c > self._drops_seen.get(r, 0)}
        if not delta:
            return
        self._drops_seen = dict(drops)
        self._drops_notified_at = now
        total = sum(delta.values())
        self.server.notifications.emit(
            note.REPORTS_DROPPED, str(BALANCER_NAME), f"{total} report(s) dropped",
            {"byReason": delta, "total": total}, now=self.clocks.wall())
