"""The ``[management]`` table, shared by both daemons' configs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from lbmgmt.configfile import ConfigFile
from lbmgmt.endpoints import Endpoint
from lbmgmt.management.auth import Credentials
from lbmgmt.settings import Setting

BALANCER_PORT = 8084
EDGE_PORT = 8085

# The management port's budgets: what one caller, or all of them, may take of it.
MAX_CONNECTIONS = Setting(
    "management", "max_connections", None, 256, 1, 100_000, None,
    "Connections to the management port at once (past it a new one is closed at once)")
MAX_CONNECTIONS_PER_ADDRESS = Setting(
    "management", "max_connections_per_address", None, 64, 1, 100_000, None,
    "Of those, from one client IP address")
REQUEST_TIMEOUT = Setting(
    "management", "request_timeout_ms", None, 10_000, 100, 600_000, "ms",
    "A request head must be complete this long after the connection opened or its last "
    "answer (an idle keep-alive connection is closed then too), its body this long after")
MAX_REQUEST_BYTES = Setting(
    "management", "max_request_bytes", None, 256 * 1024, 1024, 16 << 20, "bytes",
    "The largest request body taken (413 past it)")
MAX_BATCH = Setting(
    "management", "max_batch", None, 100, 1, 10_000, None,
    "Calls in one JSON-RPC batch (a longer batch gets one Invalid Request error)")
MAX_RESPONSE_BYTES = Setting(
    "management", "max_response_bytes", None, 16 << 20, 64 * 1024, 1 << 30, "bytes",
    "The largest JSON-RPC answer: calls of a batch past it get a Response too large error")
MAX_POLLS = Setting(
    "management", "max_polls", None, 256, 1, 100_000, None,
    "Long polls (pollNotifications) parked at once; past it the oldest is answered at "
    "once, empty")
MAX_POLLS_PER_ADDRESS = Setting(
    "management", "max_polls_per_address", None, 16, 1, 100_000, None,
    "Of those, from one client IP address (its own oldest is answered)")
SETTINGS = (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS, REQUEST_TIMEOUT, MAX_REQUEST_BYTES,
            MAX_BATCH, MAX_RESPONSE_BYTES, MAX_POLLS, MAX_POLLS_PER_ADDRESS)


@dataclass(frozen=True, slots=True)
class ManagementLimits:
    """The budgets above, as read from a config (defaults when built bare)."""

    max_connections: int = MAX_CONNECTIONS.default
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS.default
    request_timeout_ms: int = REQUEST_TIMEOUT.default
    max_request_bytes: int = MAX_REQUEST_BYTES.default
    max_batch: int = MAX_BATCH.default
    max_response_bytes: int = MAX_RESPONSE_BYTES.default
    max_polls: int = MAX_POLLS.default
    max_polls_per_address: int = MAX_POLLS_PER_ADDRESS.default

    @property
    def request_timeout(self) -> float:
        """request_timeout_ms in seconds."""
        return self.request_timeout_ms / 1000


@dataclass(slots=True)
class ManagementConfig:
    listen: Endpoint
    enabled: bool = True
    credentials: Credentials | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    notification_buffer: int = 1000
    # Names a request's Host may carry besides IP addresses and localhost (a page on
    # another name that resolves here is DNS rebinding), and origins a browser may call
    # from besides the port's own.
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    limits: ManagementLimits = ManagementLimits()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "" (every interface) and other host names


def load_management(cfg: ConfigFile, default_port: int) -> ManagementConfig:
    section = cfg.section("management")
    default = Endpoint("127.0.0.1", default_port)
    listen_text = section.get_str("listen", None)
    try:
        listen = default if listen_text is None else Endpoint.parse(listen_text,
                                                                    default_port=default_port)
    except ValueError as exc:
        section.fail("listen", str(exc))
    enabled = section.get_bool("enabled", True)
    creds_text = section.get_str("credentials_file", None)
    credentials = None
    if creds_text is not None:
        credentials = Credentials.load(cfg.path.parent / creds_text)
    elif enabled and not is_loopback(listen.host):
        section.fail("listen", f"binding the management port to {listen} needs "
                               "credentials_file (only loopback may go without)")
    cert = section.get_str("tls_cert_file", None)
    key = section.get_str("tls_key_file", None)
    if (cert is None) != (key is None):
        section.fail("tls_cert_file", "set both tls_cert_file and tls_key_file, or neither")
    buffer = section.get_int("notification_buffer", 1000, min=10, max=1_000_000)
    hosts = tuple(h.lower() for h in section.get_str_list("allowed_hosts", []))
    origins = tuple(o.rstrip("/").lower() for o in section.get_str_list("allowed_origins", []))
    for origin in origins:
        if "://" not in origin:
            section.fail("allowed_origins", f"{origin!r} is not an origin (scheme://host[:port])")
    limits = ManagementLimits(
        max_connections=MAX_CONNECTIONS.read(section),
        max_connections_per_address=MAX_CONNECTIONS_PER_ADDRESS.read(section),
        request_timeout_ms=REQUEST_TIMEOUT.read(section),
        max_request_bytes=MAX_REQUEST_BYTES.read(section),
        max_batch=MAX_BATCH.read(section),
        max_response_bytes=MAX_RESPONSE_BYTES.read(section),
        max_polls=MAX_POLLS.read(section),
        max_polls_per_address=MAX_POLLS_PER_ADDRESS.read(section))
    section.finish()
    base = cfg.path.parent
    return ManagementConfig(listen=listen, enabled=enabled, credentials=credentials,
                            tls_cert_file=base / cert if cert else None,
                            tls_key_file=base / key if key else None,
                            notification_buffer=buffer, allowed_hosts=hosts,
                            allowed_origins=origins, limits=limits)
