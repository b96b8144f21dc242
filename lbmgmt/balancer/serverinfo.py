"""The ``?serverInfoXML`` status document: every edge the balancer knows.

Element names are documented in docs/protocol.md and kept stable: monitoring
scripts of the original system scraped this document.

At 10 000 edges the document is about 4 MB and takes a few hundred ms of
Python to build, too long to hold the loop that answers redirects and reads
reports. So it is made in slices: ``server_info_slices`` yields the document
in pieces of ``PER_SLICE`` servers, and whoever drives it may let the loop run
between any two. The list of edges and the header's counts are taken when the
first piece is made; each row shows its edge as it is when its slice is made.
"""

from __future__ import annotations

from collections.abc import Iterator
from xml.sax.saxutils import escape, quoteattr

from lbmgmt.balancer.core import BalancerCore

PER_SLICE = 250  # servers per piece: about 1-2 ms of work each


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _element(tag: str, text: str) -> str:
    return f"    <{tag}>{escape(text)}</{tag}>\n" if text else f"    <{tag} />\n"


def server_info_slices(core: BalancerCore, now: float, *,
                       per_slice: int = PER_SLICE) -> Iterator[bytes]:
    registry = core.registry
    entries = sorted(registry, key=lambda e: e.address)
    available = sum(1 for e in entries if registry.is_available(e, now))
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
    ]
    yield "".join(head).encode("utf-8")
    for start in range(0, len(entries), per_slice):
        rows: list[str] = []
        for e in entries[start:start + per_slice]:
            rows += ("  <Server>\n",
                     _element("guid", str(e.guid)),
                     _element("redirect", e.address),
                     _element("state", e.state.name),
                     _element("available", "true" if registry.is_available(e, now) else "false"),
                     _element("drained", "true" if e.drained else "false"),
                     _element("load", _fmt(e.load)),
                     _element("capacity", "" if e.capacity is None else _fmt(e.capacity)),
                     _element("redirectsSinceReport", str(e.redirects_since_report)),
                     _element("secondsSinceReport", f"{e.seconds_since_report(now):.3f}"),
                     _element("messageCount", str(e.reports_received)),
                     _element("agent", e.report.agent or ""),
                     "  </Server>\n")
        yield "".join(rows).encode("utf-8")
    yield b"</LoadBalancerServerInfo>"


def render_server_info(core: BalancerCore, now: float) -> bytes:
    """The whole document at once (tests, small pools)."""
    return b"".join(server_info_slices(core, now))
