"""The ``?serverInfoXML`` and ``?serverInfoJSON`` status documents: every edge the
balancer knows, the same content in either form.

Element names are documented in docs/protocol.md and kept stable: monitoring
scripts of the original system scraped this document.

At 10 000 edges the document is about 4 MB and takes a few hundred ms of
Python to build, too long to hold the loop that answers redirects and reads
reports. So it is made in steps: ``server_info_steps`` renders ``PER_SLICE``
servers a step, and whoever drives it may let the loop run between any two.
The list of edges is taken at the first step; each row shows its edge as it is
when its step runs, and the header counts what the rows show.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from operator import attrgetter
from xml.sax.saxutils import escape, quoteattr

from lbmgmt.balancer.core import BalancerCore
from lbmgmt.steps import finish

PER_SLICE = 100  # servers per step: about a millisecond of work each
_by_address = attrgetter("report.address")


class _Groups:
    """Edges and available edges per group, counted as the rows are made (no second walk
    over the pool), with the clients sent to each; nothing when no edge has a group."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}

    def count(self, group: str | None, available: bool) -> None:
        row = self.counts.get(group or "")
        if row is None:
            row = self.counts[group or ""] = [0, 0]
        row[0] += 1
        row[1] += available

    def rows(self, core: BalancerCore) -> list[tuple[str, dict[str, int]]]:
        if not self.counts or set(self.counts) == {""}:
            return []
        redirects = core.group_redirects
        return [(name, {"edges": edges, "available": up, "redirects": redirects[name]})
                for name, (edges, up) in sorted(self.counts.items())]


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _element(tag: str, text: str) -> str:
    return f"    <{tag}>{escape(text)}</{tag}>\n" if text else f"    <{tag} />\n"


def server_info_steps(core: BalancerCore, now: float, *,
                      per_slice: int = PER_SLICE) -> Generator[None, None, bytes]:
    """The document, made ``per_slice`` servers per step: ``next()`` until StopIteration,
    whose value it is. The caller may let its loop run between any two steps."""
    registry = core.registry
    entries = sorted(registry, key=_by_address)  # C-level key: ~1 ms per 10 000 here
    available = 0
    groups = _Groups()
    pieces: list[bytes] = []
    for start in range(0, len(entries), per_slice):
        yield
        rows: list[str] = []
        for e in entries[start:start + per_slice]:
            is_available = registry.is_available(e, now)
            available += is_available
            groups.count(e.report.group, is_available)
            rows += ("  <Server>\n",
                     _element("guid", str(e.guid)),
                     _element("redirect", e.address),
                     _element("state", e.state_name),
                     _element("available", "true" if is_available else "false"),
                     _element("drained", "true" if e.drained else "false"),
                     _element("load", _fmt(e.load)),
                     _element("capacity", "" if e.capacity is None else _fmt(e.capacity)),
                     _element("redirectsSinceReport", str(e.redirects_since_report)),
                     _element("secondsSinceReport", f"{e.seconds_since_report(now):.3f}"),
                     _element("messageCount", str(e.reports_received)),
                     _element("agent", e.report.agent or ""),
                     _element("unhealthy", e.report.unhealthy or ""),
                     _element("group", e.report.group or ""),
                     _element("privateAddress", e.report.private_address or ""),
                     _element("bandwidth", "" if e.report.bandwidth is None
                              else _fmt(e.report.bandwidth)),
                     _element("bandwidthLimit", "" if e.report.bandwidth_limit is None
                              else _fmt(e.report.bandwidth_limit)),
                     _element("maxClients", "" if e.report.max_clients is None
                              else str(e.report.max_clients)),
                     _element("streams", str(len(e.streams))),
                     "  </Server>\n")
        pieces.append("".join(rows).encode("utf-8"))
    receiver = core.receiver
    drops = {str(reason): count for reason, count in receiver.drops.items()}
    head = [
        "<?xml version='1.0' encoding='utf-8'?>\n",
        f'<LoadBalancerServerInfo version="1" redirector={quoteattr(core.redirector.name)} '
        f'serverCount="{len(entries)}" availableCount="{available}">\n',
        f'  <Receiver accepted="{receiver.accepted}" dropped="{sum(drops.values())}">\n',
        *(f'    <Drop reason={quoteattr(reason)} count="{count}" />\n'
          for reason, count in sorted(drops.items())),
        "  </Receiver>\n",
        *(f'  <Group name={quoteattr(name)} edges="{row["edges"]}" '
          f'available="{row["available"]}" redirects="{row["redirects"]}" />\n'
          for name, row in groups.rows(core)),
    ]
    yield
    return b"".join((*(line.encode("utf-8") for line in head), *pieces,
                     b"</LoadBalancerServerInfo>"))


def render_server_info(core: BalancerCore, now: float) -> bytes:
    """The whole document at once (small pools, tests)."""
    return finish(server_info_steps(core, now))


def _number(value: float | None) -> float | int | None:
    return None if value is None else (int(value) if float(value).is_integer() else value)


def server_info_json_steps(core: BalancerCore, now: float, *,
                           per_slice: int = PER_SLICE) -> Generator[None, None, bytes]:
    """``?serverInfoJSON``: the XML document's content as JSON, made in steps the same way.
    Element names become keys; empty elements ``null``; numbers and booleans are typed."""
    registry = core.registry
    entries = sorted(registry, key=_by_address)
    available = 0
    groups = _Groups()
    pieces: list[str] = []
    for start in range(0, len(entries), per_slice):
        yield
        for e in entries[start:start + per_slice]:
            is_available = registry.is_available(e, now)
            available += is_available
            groups.count(e.report.group, is_available)
            report = e.report
            pieces.append(json.dumps({
                "guid": str(e.guid), "redirect": e.address, "state": e.state_name,
                "available": is_available, "drained": e.drained, "load": _number(e.load),
                "capacity": _number(e.capacity),
                "redirectsSinceReport": e.redirects_since_report,
                "secondsSinceReport": round(e.seconds_since_report(now), 3),
                "messageCount": e.reports_received, "agent": report.agent,
                "unhealthy": report.unhealthy, "group": report.group,
                "privateAddress": report.private_address,
                "bandwidth": _number(report.bandwidth),
                "bandwidthLimit": _number(report.bandwidth_limit),
                "maxClients": report.max_clients, "streams": len(e.streams)},
                ensure_ascii=False))
    receiver = core.receiver
    drops = {str(reason): count for reason, count in sorted(receiver.drops.items(),
                                                             key=lambda item: str(item[0]))}
    head = json.dumps({"version": 1, "redirector": core.redirector.name,
                       "serverCount": len(entries), "availableCount": available,
                       "receiver": {"accepted": receiver.accepted,
                                    "dropped": sum(drops.values()), "drops": drops},
                       "groups": dict(groups.rows(core))},
                      ensure_ascii=False)
    yield
    return (head[:-1] + ', "servers": [' + ", ".join(pieces) + "]}").encode("utf-8")


def render_server_info_json(core: BalancerCore, now: float) -> bytes:
    return finish(server_info_json_steps(core, now))
