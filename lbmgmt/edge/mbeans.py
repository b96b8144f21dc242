"""The edge's MBean: ``lbmgmt:type=Sender``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lbmgmt.configfile import ConfigError
from lbmgmt.edge.monitors import ManualMonitor
from lbmgmt.management import notifications as note
from lbmgmt.management.mbean import Impact, MBean, attribute, operation
from lbmgmt.management.objectname import ObjectName
from lbmgmt.management.server import MBeanServer
from lbmgmt.status import EdgeState

if TYPE_CHECKING:
    from lbmgmt.edge.daemon import EdgeDaemon

SENDER_NAME = ObjectName.parse("lbmgmt:type=Sender")


class SenderMBean(MBean):
    """An edge: what it reports, to whom, and how that goes."""

    notification_types = (note.SENDER_PAUSED, note.SENDER_UNPAUSED, note.TARGETS_RELOADED,
                          note.ATTRIBUTE_CHANGE)

    def __init__(self, edge: EdgeDaemon) -> None:
        self.e = edge

    @attribute("string", "This edge's GUID (kept in its guid_file)", metric=None)
    def ServerId(self) -> str:
        return str(self.e.guid)

    @attribute("string", "Where balancers send its clients", metric=None)
    def RedirectAddress(self) -> str:
        return self.e.config.redirect_address

    @attribute("string", "RUNNING or PAUSED (no new clients)", metric=None)
    def State(self) -> str:
        return self.e.state.name

    @attribute("boolean", "Whether the edge is paused")
    def Paused(self) -> bool:
        return self.e.state is EdgeState.PAUSED

    @attribute("number", "Load in the last report")
    def Load(self) -> float:
        return self.e.load

    @attribute("string", "The load monitor and its settings", metric=None)
    def Monitor(self) -> str:
        return self.e.monitor.describe()

    @attribute("string", "The monitor's last error, null if it reads fine", metric=None)
    def MonitorError(self) -> str | None:
        return self.e.load_error

    @attribute("integer", "Milliseconds between reports", unit="ms")
    def MessageInterval(self) -> int:
        return self.e.config.message_interval_ms

    @MessageInterval.setter
    def _set_message_interval(self, value: int) -> None:
        self.e.set_message_interval(value)

    @attribute("array", "Balancers reported to, with the last send result of each",
               metric=None)
    def Targets(self) -> list[dict[str, Any]]:
        # The key stays out: it is never readable through management.
        return [{"address": str(link.target), "line": link.target.line,
                 "lastResult": link.last_result, "reportsSent": link.reports_sent,
                 "sendErrors": link.send_errors} for link in self.e.links]

    @attribute("integer", "Reports sent (one per target per report)", metric="counter")
    def ReportsSent(self) -> int:
        return self.e.reports_sent

    @attribute("integer", "Sends that failed", metric="counter")
    def SendErrors(self) -> int:
        return self.e.send_errors

    @attribute("number", "Seconds since start", unit="s")
    def Uptime(self) -> float:
        return round(self.e.uptime(), 3)

    @operation(Impact.ACTION, "Take no new clients; reported to every balancer at once")
    async def pause(self) -> None:
        await self.e.pause()

    @operation(Impact.ACTION, "Take new clients again; reported at once")
    async def unpause(self) -> None:
        await self.e.unpause()

    @operation(Impact.ACTION, "Re-read the targets file (a bad file keeps the old targets)")
    def reloadTargets(self) -> int:
        try:
            self.e.reload_targets()
        except ConfigError as exc:  # the file and line go back to the caller
            raise ValueError(str(exc)) from None
        return len(self.e.links)

    @operation(Impact.ACTION, "Send a report to every balancer now")
    async def sendNow(self) -> None:
        await self.e.send_now()

    @operation(Impact.ACTION, "Set the load (manual monitor only); reported at once",
               load="the new load, >= 0")
    async def setLoad(self, load: float) -> None:
        if not isinstance(self.e.monitor, ManualMonitor):
            raise ValueError(f"the monitor is {self.e.monitor.name}, not manual")
        self.e.monitor.set_load(load)
        await self.e.refresh_and_send()


class SenderBeans:
    def __init__(self, edge: EdgeDaemon, server: MBeanServer) -> None:
        self.edge = edge
        self.server = server
        server.register(SENDER_NAME, SenderMBean(edge))
        edge.listeners.append(self.on_event)

    def on_event(self, event: str) -> None:
        kinds = {"paused": (note.SENDER_PAUSED, "edge paused"),
                 "unpaused": (note.SENDER_UNPAUSED, "edge unpaused"),
                 "targets-reloaded": (note.TARGETS_RELOADED, "targets reloaded")}
        if event in kinds:
            kind, message = kinds[event]
            self.server.notifications.emit(kind, str(SENDER_NAME), message,
                                           {"guid": str(self.edge.guid),
                                            "targets": len(self.edge.links)},
                                           now=self.edge.clock())
