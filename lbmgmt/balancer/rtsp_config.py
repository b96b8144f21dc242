"""The ``[rtsp]`` table of the balancer config: RTSP redirects and their budgets."""

from __future__ import annotations

from dataclasses import dataclass, field

from lbmgmt.configfile import ConfigFile
from lbmgmt.endpoints import Endpoint
from lbmgmt.settings import Setting

SCHEMES = ("rtsp", "rtsps")
DEFAULT_PORT = 554  # RTSP's own port, for a client URL that names none


def _rtsp(key: str, default: int, minimum: int, maximum: int, unit: str | None,
          doc: str) -> Setting:
    return Setting("rtsp", key, None, default, minimum, maximum, unit, doc)


HEAD_TIMEOUT = _rtsp("head_timeout_ms", 10_000, 100, 600_000, "ms",
                     "An RTSP request head must be complete this long after its first byte")
IDLE_TIMEOUT = _rtsp("idle_timeout_ms", 15_000, 100, 3_600_000, "ms",
                     "An RTSP connection idle this long after an answer is closed")
MAX_HEAD = _rtsp("max_head_bytes", 8192, 1024, 1 << 20, "bytes",
                 "The longest RTSP request head taken (414 or 400 past it)")
MAX_BODY = _rtsp("max_body_bytes", 65536, 0, 1 << 24, "bytes",
                 "The largest RTSP request body taken (an ANNOUNCE's SDP; 413 past it)")
SETTINGS = (HEAD_TIMEOUT, IDLE_TIMEOUT, MAX_HEAD, MAX_BODY)


@dataclass(frozen=True, slots=True)
class RtspApp:
    """``rtsp://lb/<name>/…`` goes to ``rtsp://edge/<redirect_app_name>/…``."""

    name: str
    redirect_app_name: str


@dataclass(slots=True)
class RtspConfig:
    enabled: bool = True  # on the client port(s), told from HTTP by the request line
    listen: tuple[Endpoint, ...] = ()  # ports of its own (RTSP only), e.g. *:554
    redirect_scheme: str = "rtsp"
    # None: the port in the edge's address, else the port the client reached us on
    redirect_port: int | None = None
    # Empty: every path goes to the edge as it came. Else the first path segment must
    # name one of them (404 otherwise), and is rewritten to its redirect_app_name.
    apps: dict[str, RtspApp] = field(default_factory=dict)
    head_timeout_ms: int = HEAD_TIMEOUT.default
    idle_timeout_ms: int = IDLE_TIMEOUT.default
    max_head_bytes: int = MAX_HEAD.default
    max_body_bytes: int = MAX_BODY.default


def load_rtsp(cfg: ConfigFile) -> RtspConfig:
    section = cfg.section("rtsp")
    out = RtspConfig()
    out.enabled = section.get_bool("enabled", True)
    out.listen = section.get_endpoints("listen", (), default_port=DEFAULT_PORT)
    out.redirect_scheme = section.get_str("redirect_scheme", "rtsp")
    if out.redirect_scheme not in SCHEMES:
        section.fail("redirect_scheme", f"must be one of {', '.join(SCHEMES)}")
    out.redirect_port = section.get_int("redirect_port", None, min=1, max=65535)
    for setting in SETTINGS:
        setattr(out, setting.key, setting.read(section))
    apps_table = section.get_table("apps", None)
    section.finish()
    for name in apps_table or {}:
        app = cfg.section(f"rtsp.apps.{name}")
        if not name or "/" in name or "?" in name:
            app.fail("redirect_app_name", f"application name {name!r} may not contain '/' "
                     "or '?'")
        target = app.get_str("redirect_app_name", name)
        if "?" in target or target.startswith("/"):
            app.fail("redirect_app_name", "must be a path without a leading '/' or a '?'")
        app.finish()
        out.apps[name] = RtspApp(name, target)
    return out
