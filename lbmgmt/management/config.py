"""The ``[management]`` table, shared by both daemons' configs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from lbmgmt.configfile import ConfigFile
from lbmgmt.endpoints import Endpoint
from lbmgmt.management.auth import Credentials

BALANCER_PORT = 8084
EDGE_PORT = 8085


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
    section.finish()
    base = cfg.path.parent
    return ManagementConfig(listen=listen, enabled=enabled, credentials=credentials,
                            tls_cert_file=base / cert if cert else None,
                            tls_key_file=base / key if key else None,
                            notification_buffer=buffer, allowed_hosts=hosts,
                            allowed_origins=origins)
