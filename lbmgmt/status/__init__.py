"""The edge→balancer status protocol, sans-IO.

``ReportSealer`` turns a ``Report`` into a datagram; ``ReportReceiver`` turns a
datagram into ``ReportAccepted`` or ``DatagramDropped``. Neither touches a
socket or a clock: callers pass bytes and ``now``. See docs/protocol.md.
"""

from lbmgmt.status.keys import SharedKey
from lbmgmt.status.receiver import (DatagramDropped, DropReason, ReplayMark, ReportAccepted,
                                    ReportReceiver)
from lbmgmt.status.sealer import ReportSealer
from lbmgmt.status.wire import EdgeState, Report

__all__ = [
    "DatagramDropped", "DropReason", "EdgeState", "ReplayMark", "Report", "ReportAccepted",
    "ReportReceiver", "ReportSealer", "SharedKey",
]
