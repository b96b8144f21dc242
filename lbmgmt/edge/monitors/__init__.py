"""Load monitors: how an edge measures the load it reports (and the streams it carries).

A monitor is chosen in the edge config by short name or ``module:Class``. The
edge never knows what media server it sits beside; a monitor turns whatever
that server exposes into one number, and, if it can tell, the names of the
streams the server carries. One module per monitor; the public names are all
here, so ``lbmgmt.edge.monitors:ManualMonitor`` and the imports stay as they were.
docs/monitors.md describes each.
"""

from __future__ import annotations

from lbmgmt.edge.monitors.base import LoadMonitor, MonitorError
from lbmgmt.edge.monitors.manual import ManualMonitor
from lbmgmt.edge.monitors.mediamtx import MediaMtxMonitor
from lbmgmt.edge.monitors.nginx_rtmp import (NginxRtmpMonitor, bw_out, count_nginx_rtmp_clients,
                                             nginx_rtmp_streams, stat_page)
from lbmgmt.edge.monitors.srs import SrsMonitor
from lbmgmt.edge.monitors.tcp import TcpConnectionsMonitor, count_established, count_states
from lbmgmt.plugins import resolve_plugin

BUILTIN_MONITORS: dict[str, type[LoadMonitor]] = {
    ManualMonitor.name: ManualMonitor,
    TcpConnectionsMonitor.name: TcpConnectionsMonitor,
    NginxRtmpMonitor.name: NginxRtmpMonitor,
    MediaMtxMonitor.name: MediaMtxMonitor,
    SrsMonitor.name: SrsMonitor,
}


def monitor_class(spec: str) -> type[LoadMonitor]:
    return resolve_plugin("monitor", spec, BUILTIN_MONITORS, LoadMonitor)


__all__ = [
    "BUILTIN_MONITORS", "LoadMonitor", "ManualMonitor", "MediaMtxMonitor", "MonitorError",
    "NginxRtmpMonitor", "SrsMonitor", "TcpConnectionsMonitor", "bw_out", "count_established",
    "count_nginx_rtmp_clients", "count_states", "monitor_class", "nginx_rtmp_streams",
    "stat_page",
]
