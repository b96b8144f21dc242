"""The ``[rtmp]`` table of the balancer config and its applications."""

from __future__ import annotations

from dataclasses import dataclass, field

from lbmgmt.configfile import ConfigFile
from lbmgmt.endpoints import Endpoint
from lbmgmt.settings import Setting

MODES = ("redirect", "proxy")


def _rtmp(key: str, default: int, minimum: int, maximum: int, unit: str | None,
          doc: str) -> Setting:
    return Setting("rtmp", key, None, default, minimum, maximum, unit, doc)


HANDSHAKE_TIMEOUT = _rtmp("handshake_timeout_ms", 5000, 100, 600_000, "ms",
                          "From the connection's start to the end of the RTMP handshake")
CONNECT_TIMEOUT = _rtmp("connect_timeout_ms", 5000, 100, 600_000, "ms",
                        "From the end of the handshake to the client's connect command")
IDLE_TIMEOUT = _rtmp("idle_timeout_ms", 30_000, 100, 86_400_000, "ms",
                     "A connection that sends nothing this long is closed")
MAX_CONNECTIONS = _rtmp("max_connections", 1000, 1, 1_000_000, None,
                        "RTMP sessions at once, proxied relays included")
MAX_BYTES_BEFORE_CONNECT = _rtmp(
    "max_bytes_before_connect", 65536, 1024, 1 << 24, "bytes",
    "What a client may send between handshake and connect (also the most kept for a "
    "proxy's replay)")
MIN_CHUNK_SIZE = _rtmp("min_chunk_size", 128, 1, 65536, "bytes",
                       "The smallest Set Chunk Size a client may ask for")
MAX_CHUNK_SIZE = _rtmp("max_chunk_size", 65536, 128, 1 << 24, "bytes",
                       "The largest Set Chunk Size a client may ask for")
MAX_MESSAGE_SIZE = _rtmp("max_message_size", 65536, 1024, 1 << 24, "bytes",
                         "The largest RTMP message taken (a connect is well under 1 KiB)")
PROXY_CONNECT_TIMEOUT = _rtmp("proxy_connect_timeout_ms", 5000, 100, 600_000, "ms",
                              "To reach the edge and finish its handshake, proxy mode")
PROXY_RETRIES = _rtmp("proxy_retries", 2, 0, 10, None,
                      "Proxy mode: further edges tried when the chosen one cannot be reached")
PROXY_SUSPECT = _rtmp("proxy_suspect_ms", 5000, 0, 600_000, "ms",
                      "Proxy mode: an edge that could not be reached gets no new client "
                      "(from any front) for this long")
RTMPT_PER_ADDRESS = _rtmp("rtmpt_sessions_per_address", 16, 1, 1_000_000, None,
                          "RTMPT sessions one client address may hold (its oldest goes "
                          "for a new one); max_connections caps them in all")
SETTINGS = (HANDSHAKE_TIMEOUT, CONNECT_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS,
            MAX_BYTES_BEFORE_CONNECT, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_MESSAGE_SIZE,
            PROXY_CONNECT_TIMEOUT, PROXY_RETRIES, PROXY_SUSPECT, RTMPT_PER_ADDRESS)
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
    handshake_timeout_ms: int = HANDSHAKE_TIMEOUT.default
    connect_timeout_ms: int = CONNECT_TIMEOUT.default
    idle_timeout_ms: int = IDLE_TIMEOUT.default
    max_connections: int = MAX_CONNECTIONS.default
    max_bytes_before_connect: int = MAX_BYTES_BEFORE_CONNECT.default
    min_chunk_size: int = MIN_CHUNK_SIZE.default
    max_chunk_size: int = MAX_CHUNK_SIZE.default
    max_message_size: int = MAX_MESSAGE_SIZE.default
    proxy_connect_timeout_ms: int = PROXY_CONNECT_TIMEOUT.default
    proxy_retries: int = PROXY_RETRIES.default
    proxy_suspect_ms: int = PROXY_SUSPECT.default
    rtmpt_sessions_per_address: int = RTMPT_PER_ADDRESS.default


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
    for setting in SETTINGS:
        setattr(out, setting.key, setting.read(section))
    if out.min_chunk_size > out.max_chunk_size:
        section.fail("min_chunk_size", "must not be over max_chunk_size")
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
