"""The ``?serverInfoXML`` status document: every edge the balancer knows.

Element names are documented in docs/protocol.md and kept stable: monitoring
scripts of the original system scraped this document.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping

from lbmgmt.balancer.registry import ServerRegistry
from lbmgmt.status import DropReason


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def render_server_info(servers: ServerRegistry, now: float, *, redirector: str,
                       accepted: int, drops: Mapping[DropReason, int]) -> bytes:
    root = ET.Element("LoadBalancerServerInfo", {
        "version": "1",
        "redirector": redirector,
        "serverCount": str(len(servers)),
        "availableCount": str(servers.available_count(now)),
    })
    receiver = ET.SubElement(root, "Receiver", {"accepted": str(accepted),
                                                "dropped": str(sum(drops.values()))})
    for reason, count in sorted(drops.items()):
        ET.SubElement(receiver, "Drop", {"reason": str(reason), "count": str(count)})
    for entry in sorted(servers, key=lambda e: e.address):
        server = ET.SubElement(root, "Server")
        for tag, value in (
            ("guid", str(entry.guid)),
            ("redirect", entry.address),
            ("state", entry.state.name),
            ("available", "true" if servers.takes_clients(entry, now) else "false"),
            ("drained", "true" if entry.drained else "false"),
            ("load", _fmt(entry.load)),
            ("capacity", "" if entry.capacity is None else _fmt(entry.capacity)),
            ("redirectsSinceReport", str(entry.redirects_since_report)),
            ("secondsSinceReport", f"{entry.seconds_since_report(now):.3f}"),
            ("messageCount", str(entry.reports_received)),
        ):
            ET.SubElement(server, tag).text = value
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
