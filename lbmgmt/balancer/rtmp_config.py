"""The ``[rtmp]`` table of the balancer config and its applications."""

from __future__ import annotations

from dataclasses import dataclass, field

from lbmgmt.configfile import ConfigFile
from lbmgmt.endpoints import Endpoint

MODES = ("redirect", "proxy")
SCHEMES = ("rtmp", "rtmps", "rtmpt", "rtmpe", "rtmpts")


@dataclass(slots=True)
class RtmpApp:
    name: str
    mode: str = "redirect"  # or "proxy": relay the client to the chosen edge
    redirect_app_name: str = "live"  # the application on the edge
    redirect_port: int | None = None  # None: the edge address's port, else the client's
    redirect_scheme: str | None = None  # None: the scheme the client used
    redirect_on_connect: bool = True  # False: accept connect, redirect on play/publish


def _default_apps() -> dict[str, RtmpApp]:
    return {"redirect": RtmpApp("redirect")}


@dataclass(slots=True)
class RtmpConfig:
    enabled: bool = True
    listen: Endpoint | None = None  # None: share the HTTP port, sniffing the first byte
    apps: dict[str, RtmpApp] = field(default_factory=_default_apps)
    handshake_timeout_ms: int = 5000
    idle_timeout_ms: int = 30_000
    max_connections: int = 1000
    max_chunk_size: int = 65536
    max_message_size: int = 65536  # a connect is well under 1 KiB
    proxy_connect_timeout_ms: int = 5000


def load_rtmp(cfg: ConfigFile) -> RtmpConfig:
    section = cfg.section("rtmp")
    out = RtmpConfig()
    out.enabled = section.get_bool("enabled", True)
    listen = section.get_str("listen", None)
    if listen is not None:
        try:
            out.listen = Endpoint.parse(listen, default_port=1935)
        except ValueError as exc:
            section.fail("listen", str(exc))
    out.handshake_timeout_ms = section.get_int("handshake_timeout_ms", 5000, min=100,
                                               max=600_000)
    out.idle_timeout_ms = section.get_int("idle_timeout_ms", 30_000, min=100, max=86_400_000)
    out.max_connections = section.get_int("max_connections", 1000, min=1, max=1_000_000)
    out.max_chunk_size = section.get_int("max_chunk_size", 65536, min=128, max=1 << 24)
    out.max_message_size = section.get_int("max_message_size", 65536, min=1024, max=1 << 24)
    out.proxy_connect_timeout_ms = section.get_int("proxy_connect_timeout_ms", 5000, min=100,
                                                   max=600_000)
    apps_table = section.get_table("apps", None)
    section.finish()
    if apps_table is not None:
        out.apps = {}
        for name in apps_table:
            app = cfg.section(f"rtmp.apps.{name}")
            if "/" in name or "?" in name:
                app.fail("mode", f"application name {name!r} may not contain '/' or '?'")
            mode = app.get_str("mode", "redirect")
            if mode not in MODES:
                app.fail("mode", f"must be one of {', '.join(MODES)}, not {mode!r}")
            scheme = app.get_str("redirect_scheme", None)
            if scheme is not None and scheme not in SCHEMES:
                app.fail("redirect_scheme", f"must be one of {', '.join(SCHEMES)}")
            out.apps[name] = RtmpApp(
                name=name, mode=mode,
                redirect_app_name=app.get_str("redirect_app_name", "live"),
                redirect_port=app.get_int("redirect_port", None, min=1, max=65535),
                redirect_scheme=scheme,
                redirect_on_connect=app.get_bool("redirect_on_connect", True))
            app.finish()
    return out
