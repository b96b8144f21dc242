"""The edge's MBean: ``lbmgmt:type=Sender``.

A management view of anything that behaves as a ``Sender`` (the edge daemon
does): it never imports the daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from lbmgmt.configfile import ConfigError
from lbmgmt.edge.config import LOAD_SAMPLE, MESSAGE_INTERVAL, EdgeConfig
from lbmgmt.edge.monitors import LoadMonitor, ManualMonitor
from lbmgmt.edge.targets import ReportTarget
from lbmgmt.management import notifications as note
from lbmgmt.management.mbean import Impact, MBean, attribute, operation
from lbmgmt.management.objectname import ObjectName
from lbmgmt.management.server import MBeanServer
from lbmgmt.status import EdgeState

SENDER_NAME = ObjectName.parse("lbmgmt:type=Sender")
# The edge began draining to stop ([edge] drain_on_stop and SIGTERM).
SENDER_DRAINING = "lbmgmt.sender.draining"


class Link(Protocol):
    """One balancer reported to, and how the sends to it go."""

    @property
    def target(self) -> ReportTarget: ...
    @property
    def last_result(self) -> str: ...
    @property
    def reports_sent(self) -> int: ...
    @property
    def send_errors(self) -> int: ...
    @property
    def failing(self) -> bool: ...


class Sender(Protocol):
    """What the Sender MBean reads and drives."""

    guid: Any
    config: EdgeConfig
    state: EdgeState
    load: float
    bandwidth: float | None
    load_error: str | None
    monitor: LoadMonitor
    streams_reported: list[str]
    streams_not_sent: int
    reports_sent: int
    send_errors: int
    quick_reports: int
    listeners: list[Callable[[str], None]]
    clock: Callable[[], float]

    @property
    def links(self) -> Sequence[Link]: ...
    def uptime(self) -> float: ...
    def draining_ms(self) -> int | None: ...
    def set_message_interval(self, ms: int) -> None: ...
    def set_load_sample(self, ms: int) -> None: ...
    async def pause(self) -> None: ...
    async def unpause(self) -> None: ...
    def reload_targets(self) -> None: ...
    async def send_now(self) -> None: ...
    async def refresh_and_send(self) -> None: ...


class SenderMBean(MBean):
    """An edge: what it reports, to whom, and how that goes."""

    notification_types = (note.SENDER_PAUSED, note.SENDER_UNPAUSED, SENDER_DRAINING,
                          note.TARGETS_RELOADED, note.ATTRIBUTE_CHANGE)

    def __init__(self, sender: Sender) -> None:
        self.sender = sender

    @attribute("string", "This edge's GUID (kept in its guid_file)", metric=None)
    def ServerId(self) -> str:
        return str(self.sender.guid)

    @attribute("string", "Where balancers send its clients", metric=None)
    def RedirectAddress(self) -> str:
        return self.sender.config.redirect_address

    @attribute("string", "RUNNING or PAUSED (no new clients)", metric=None)
    def State(self) -> str:
        return self.sender.state.name

    @attribute("boolean", "Whether the edge is paused")
    def Paused(self) -> bool:
        return self.sender.state is EdgeState.PAUSED

    @attribute("number", "Load in the last report")
    def Load(self) -> float:
        return self.sender.load

    @attribute("number", "Outbound bits/s in the last report (null: not measured)")
    def Bandwidth(self) -> float | None:
        return self.sender.bandwidth

    @attribute("string", "The group the balancers route clients to this edge by (null: "
               "none)", metric=None)
    def Group(self) -> str | None:
        return self.sender.config.group

    @attribute("string", "The load monitor and its settings", metric=None)
    def Monitor(self) -> str:
        return self.sender.monitor.describe()

    @attribute("string", "The monitor's last error, null if it reads fine", metric=None)
    def MonitorError(self) -> str | None:
        return self.sender.load_error

    @attribute("array", "Names of the streams in the last report (the keys of the "
               "monitor's first max_streams that fit the datagram), most watched first",
               metric=None)
    def Streams(self) -> list[str]:
        return list(self.sender.streams_reported)

    @attribute("integer", "Streams the monitor named that the last report left out "
               "(past max_streams, or no room left in the datagram)")
    def StreamsNotSent(self) -> int:
        return self.sender.streams_not_sent

    @attribute("integer", "Draining to stop: ms until it stops at the latest (null: not "
               "draining)", unit="ms")
    def Draining(self) -> int | None:
        return self.sender.draining_ms()

    @attribute.of(MESSAGE_INTERVAL)
    def MessageInterval(self) -> int:
        return self.sender.config.message_interval_ms

    @MessageInterval.setter
    def _set_message_interval(self, value: int) -> None:
        self.sender.set_message_interval(value)

    @attribute.of(LOAD_SAMPLE)
    def LoadSample(self) -> int:
        return self.sender.config.load_sample_ms

    @LoadSample.setter
    def _set_load_sample(self, value: int) -> None:
        self.sender.set_load_sample(value)

    @attribute("integer", "Reports sent between intervals because the load moved by "
               "max(1, 10 %) or the monitor's health changed (one per round, all targets)",
               metric="counter")
    def QuickReports(self) -> int:
        return self.sender.quick_reports

    @attribute("array", "Balancers reported to, with the last send result of each",
               metric=None)
    def Targets(self) -> list[dict[str, Any]]:
        # The key stays out: it is never readable through management.
        return [{"address": str(link.target), "line": link.target.line,
                 "lastResult": link.last_result, "reportsSent": link.reports_sent,
                 "sendErrors": link.send_errors, "failing": link.failing}
                for link in self.sender.links]

    @attribute("integer", "Reports sent (one per target per report)", metric="counter")
    def ReportsSent(self) -> int:
        return self.sender.reports_sent

    @attribute("integer", "Sends that failed", metric="counter")
    def SendErrors(self) -> int:
        return self.sender.send_errors

    @attribute("number", "Seconds since start", unit="s")
    def Uptime(self) -> float:
        return round(self.sender.uptime(), 3)

    @operation(Impact.ACTION, "Take no new clients; reported to every balancer at once")
    async def pause(self) -> None:
        await self.sender.pause()

    @operation(Impact.ACTION, "Take new clients again; reported at once")
    async def unpause(self) -> None:
        await self.sender.unpause()

    @operation(Impact.ACTION, "Re-read the targets file (a bad file keeps the old targets)")
    def reloadTargets(self) -> int:
        try:
            self.sender.reload_targets()
        except ConfigError as exc:  # the file and line go back to the caller
            raise ValueError(str(exc)) from None
        return len(self.sender.links)

    @operation(Impact.ACTION, "Send a report to every balancer now")
    async def sendNow(self) -> None:
        await self.sender.send_now()

    @operation(Impact.ACTION, "Set the load (manual monitor only); reported at once",
               load="the new load, >= 0")
    async def setLoad(self, load: float) -> None:
        if not isinstance(self.sender.monitor, ManualMonitor):
            raise ValueError(f"the monitor is {self.sender.monitor.name}, not manual")
        self.sender.monitor.set_load(load)
        await self.sender.refresh_and_send()


class SenderBeans:
    def __init__(self, sender: Sender, server: MBeanServer) -> None:
        self.sender = sender
        self.server = server
        server.register(SENDER_NAME, SenderMBean(sender))
        sender.listeners.append(self.on_event)

    def on_event(self, event: str) -> None:
        kinds = {"paused": (note.SENDER_PAUSED, "edge paused"),
                 "unpaused": (note.SENDER_UNPAUSED, "edge unpaused"),
                 "draining": (SENDER_DRAINING, "edge draining to stop"),
                 "targets-reloaded": (note.TARGETS_RELOADED, "targets reloaded")}
        if event in kinds:
            kind, message = kinds[event]
            self.server.notifications.emit(kind, str(SENDER_NAME), message,
                                           {"guid": str(self.sender.guid),
                                            "targets": len(self.sender.links)},
                                           now=self.sender.clock())
