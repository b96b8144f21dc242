"""The ``?serverInfoXML`` status document: every edge the balancer knows.

Element names are documented in docs/protocol.md and kept stable: monitoring
scripts of the original system scraped this document. Rendered from a
``PoolStatus`` snapshot of the core.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from lbmgmt.balancer.core import PoolStatus


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def render_server_info(pool: PoolStatus) -> bytes:
    root = ET.Element("LoadBalancerServerInfo", {
        "version": "1",
        "redirector": pool.redirector,
        "serverCount": str(pool.server_count),
        "availableCount": str(pool.available_count),
    })
    receiver = ET.SubElement(root, "Receiver", {"accepted": str(pool.accepted),
                                                "dropped": str(sum(pool.drops.values()))})
    for reason, count in sorted(pool.drops.items()):
        ET.SubElement(receiver, "Drop", {"reason": reason, "count": str(count)})
    for row in pool.servers:
        server = ET.SubElement(root, "Server")
        for tag, value in (
            ("guid", str(row.guid)),
            ("redirect", row.address),
            ("state", row.state),
            ("available", "true" if row.available else "false"),
            ("drained", "true" if row.drained else "false"),
            ("load", _fmt(row.load)),
            ("capacity", "" if row.capacity is None else _fmt(row.capacity)),
            ("redirectsSinceReport", str(row.redirects_since_report)),
            ("secondsSinceReport", f"{row.seconds_since_report:.3f}"),
            ("messageCount", str(row.reports_received)),
            ("agent", row.agent or ""),
        ):
            ET.SubElement(server, tag).text = value
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
