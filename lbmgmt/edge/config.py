"""Edge daemon configuration (TOML); see examples/edge.toml for every key."""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from pathlib import Path

from lbmgmt.configfile import ConfigError, ConfigFile, Section
from lbmgmt.edge.monitors import LoadMonitor, ManualMonitor, MonitorError, monitor_class
from lbmgmt.management.config import EDGE_PORT, ManagementConfig, load_management
from lbmgmt.plugins import PluginError
from lbmgmt.settings import Setting
from lbmgmt.statedir import default_file
from lbmgmt.status.wire import MAX_STREAMS

MESSAGE_INTERVAL = Setting(
    "edge", "message_interval_ms", "MessageInterval", 2500, 10, 3_600_000, "ms",
    "Time between two reports to every balancer")
LOAD_SAMPLE = Setting(
    "edge", "load_sample_ms", "LoadSample", 50, 0, 60_000, "ms",
    "How often the load is read between reports: a change of max(1, 10 %) since the last "
    "report, or the monitor failing or answering again, is reported at once, at most every "
    "100 ms (0: only at each report)")
MAX_STREAMS_SENT = Setting(
    "edge", "max_streams", None, MAX_STREAMS, 0, MAX_STREAMS, None,
    "Streams a report names at most, the most watched first (0: none; fewer when the rest "
    "of the report is long)")
DRAIN_TIMEOUT = Setting(
    "edge", "drain_timeout_ms", None, 600_000, 0, 86_400_000, "ms",
    "With drain_on_stop, SIGTERM stops the edge when its load reaches 0, or after this "
    "long whatever its load")
SETTINGS = (MESSAGE_INTERVAL, LOAD_SAMPLE, MAX_STREAMS_SENT, DRAIN_TIMEOUT)
MAX_CLIENTS_LIMIT = 0xFFFFFFFF  # the report's max_clients is a u32


@dataclass(slots=True)
class EdgeConfig:
    redirect_address: str
    targets_file: Path
    guid_file: Path
    message_interval_ms: int = MESSAGE_INTERVAL.default
    load_sample_ms: int = LOAD_SAMPLE.default
    capacity: float | None = None
    group: str | None = None  # its group (region, site) for the balancers' [routing]
    private_address: str | None = None  # for clients inside the fleet's own networks
    bandwidth_limit: float | None = None  # bits/s it may send: past it, no new clients
    bandwidth_interface: str | None = None  # its outbound bits/s from this interface
    monitor: LoadMonitor = field(default_factory=ManualMonitor)
    management: ManagementConfig | None = None  # None: no management port (embedding)
    max_streams: int = MAX_STREAMS_SENT.default  # stream keys a report carries at most
    max_clients: int | None = None  # the most clients it takes, reported (None: no limit)
    drain_on_stop: bool = False  # SIGTERM: no new clients, stop when the load is 0...
    drain_timeout_ms: int = DRAIN_TIMEOUT.default  # ... or after this long, whatever the load


def expand_env(text: str, section: Section, key: str) -> str:
    """``${VAR}`` substitution; an unset variable is an error, never an empty host."""
    try:
        return string.Template(text).substitute(os.environ)
    except KeyError as exc:
        section.fail(key, f"environment variable {exc.args[0]} is not set")
    except ValueError as exc:
        section.fail(key, f"bad ${{...}} placeholder: {exc}")


def load_edge_config(path: str | Path) -> EdgeConfig:
    cfg = ConfigFile.load(path)
    cfg.check_tables(["edge", "monitor", "management"])
    base = cfg.path.parent
    edge = cfg.section("edge", required=True)
    address = expand_env(edge.get_str("redirect_address"), edge, "redirect_address").strip()
    if not address or len(address.encode()) > 255:
        edge.fail("redirect_address", "must expand to 1-255 bytes")
    if any(c <= " " or c == "\x7f" for c in address):
        edge.fail("redirect_address", "must have no spaces or control characters")
    targets = base / edge.get_str("targets_file", "targets.txt")
    guid_text = edge.get_str("guid_file", None)
    # unset: the state directory, never beside the config (lbmgmt.statedir)
    guid = (default_file(cfg.path, ".guid") if guid_text is None else base / guid_text)
    interval = MESSAGE_INTERVAL.read(edge)
    sample = LOAD_SAMPLE.read(edge)
    capacity = edge.get_number("capacity", None, positive=True)
    group = edge.get_str("group", None)
    if group is not None and not 1 <= len(group.encode()) <= 64:
        edge.fail("group", "must be 1-64 bytes")
    private = edge.get_str("private_address", None)
    if private is not None:
        private = expand_env(private, edge, "private_address").strip()
        if not private or len(private.encode()) > 255:
            edge.fail("private_address", "must expand to 1-255 bytes")
        if any(c <= " " or c == "\x7f" for c in private):
            edge.fail("private_address", "must have no spaces or control characters")
    limit_mbps = edge.get_number("bandwidth_limit_mbps", None, positive=True)
    interface = edge.get_str("bandwidth_interface", None)
    if interface is not None:
        from lbmgmt.edge.bandwidth import BandwidthError, InterfaceBandwidth
        try:
            InterfaceBandwidth(interface).check()
        except (ValueError, BandwidthError) as exc:
            edge.fail("bandwidth_interface", str(exc))
    max_streams = MAX_STREAMS_SENT.read(edge)
    max_clients = edge.get_int("max_clients", None, min=1, max=MAX_CLIENTS_LIMIT)
    drain_on_stop = edge.get_bool("drain_on_stop", False)
    drain_timeout = DRAIN_TIMEOUT.read(edge)
    edge.finish()

    mon = cfg.section("monitor")
    spec = mon.get_str("type", "manual")
    try:
        monitor = monitor_class(spec).from_config(mon)
    except (PluginError, MonitorError, ValueError) as exc:
        mon.fail("type", str(exc))
    mon.finish()
    return EdgeConfig(redirect_address=address, targets_file=targets, guid_file=guid,
                      message_interval_ms=interval, load_sample_ms=sample, capacity=capacity,
                      group=group, private_address=private,
                      bandwidth_limit=None if limit_mbps is None else limit_mbps * 1e6,
                      bandwidth_interface=interface,
                      monitor=monitor,
                      management=load_management(cfg, EDGE_PORT),
                      max_streams=max_streams, max_clients=max_clients,
                      drain_on_stop=drain_on_stop, drain_timeout_ms=drain_timeout)


__all__ = ["ConfigError", "EdgeConfig", "load_edge_config"]
