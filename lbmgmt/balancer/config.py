"""Balancer daemon configuration (TOML); see examples/balancer.toml for every key."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from lbmgmt.configfile import ConfigError, ConfigFile, Section
from lbmgmt.endpoints import Endpoint
from lbmgmt.management.config import BALANCER_PORT, ManagementConfig, load_management
from lbmgmt.plugins import PluginError
from lbmgmt.balancer.affinity import DEFAULT_BALANCE_FACTOR, MAX_BALANCE_FACTOR
from lbmgmt.balancer.redirectors import redirector_class
from lbmgmt.balancer.rtmp_config import RtmpConfig, load_rtmp
from lbmgmt.balancer.routing import FORWARDED_HEADERS, Network, Rule, RoutingConfig
from lbmgmt.balancer.rtsp_config import RtspConfig, load_rtsp
from lbmgmt.settings import Setting
from lbmgmt.statedir import default_file
from lbmgmt.status import SharedKey
from lbmgmt.status.keys import key_problem

DEFAULT_UDP_PORT = 1934
DEFAULT_HTTP_PORT = 1935

MESSAGE_TIMEOUT = Setting(
    "balancer", "message_timeout_ms", "MessageTimeout", 5000, 10, 3_600_000, "ms",
    "The least time an edge may be silent before it leaves the pool (the floor under "
    "missed_reports)")
MISSED_REPORTS = Setting(
    "balancer", "missed_reports", "MissedReports", 4, 1, 100, None,
    "An edge leaves after missing this many of its own reports in a row (by the interval "
    "it reports, plus half an interval)")
MAX_SILENCE = Setting(
    "balancer", "max_silence_ms", "MaxSilence", 60_000, 10, 3_600_000, "ms",
    "An edge silent this long leaves whatever its interval (unless message_timeout_ms is "
    "longer)")
GRACE = Setting(
    "balancer", "grace_ms", "Grace", 500, 0, 60_000, "ms",
    "Redirects this long before a report was sent still count "
    "(weighted by the chance the client had not connected)")
AFFINITY_FLOOR = Setting(
    "balancer", "affinity_floor", "AffinityFloor", 8, 0, 1_000_000, None,
    "With stream affinity, an edge under this many clients takes more viewers of a "
    "stream it carries whatever the mean (docs: Choosing an edge)")
PEERS = Setting(
    "balancer", "peers", "Peers", 0, 0, 1000, None,
    "Other balancers serving the same edges: stream affinity counts each redirect since "
    "an edge's report this many times more, as if each of them had sent as many")
MAX_CLOCK_SKEW = Setting(
    "balancer", "max_clock_skew_ms", None, 30_000, 100, 3_600_000, "ms",
    "Reports stamped further than this from the balancer's clock are dropped as stale")
HEAD_TIMEOUT = Setting(
    "http", "head_timeout_ms", None, 10_000, 100, 600_000, "ms",
    "A request head (line and headers) must be complete this long after its first byte")
KEEPALIVE_TIMEOUT = Setting(
    "http", "keepalive_timeout_ms", None, 15_000, 100, 3_600_000, "ms",
    "An idle keep-alive connection is closed after this long")
MAX_HEAD = Setting(
    "http", "max_head_bytes", None, 8192, 1024, 1 << 20, "bytes",
    "The longest request head taken (414 for a request line over it, else 431)")
MAX_BODY = Setting(
    "http", "max_body_bytes", None, 65536, 0, 1 << 24, "bytes",
    "The largest request body taken (a WHIP offer, RTMPT's; 413 past it)")
MAX_CLIENTS = Setting(
    "clients", "max_connections", None, 10_000, 1, 1_000_000, None,
    "Connections on the client port(s) at once: HTTP, RTMP and proxied relays")
MAX_CLIENTS_PER_ADDRESS = Setting(
    "clients", "max_connections_per_address", None, 256, 1, 1_000_000, None,
    "Of those, from one client IP address")
SETTINGS = (MESSAGE_TIMEOUT, MISSED_REPORTS, MAX_SILENCE, GRACE, AFFINITY_FLOOR, PEERS,
            MAX_CLOCK_SKEW,
            HEAD_TIMEOUT, KEEPALIVE_TIMEOUT, MAX_HEAD, MAX_BODY, MAX_CLIENTS,
            MAX_CLIENTS_PER_ADDRESS)


@dataclass(slots=True)
class HttpConfig:
    # the client port(s): HTTP, and RTMP and RTSP told apart by their first bytes; more
    # than one for port rollover (a client behind a firewall that passes only port 80)
    listen: tuple[Endpoint, ...] = (Endpoint("", DEFAULT_HTTP_PORT),)
    enable_server_info_xml: bool = True
    redirect_scheme: str = "http"  # scheme of the edges' HTTP service, for /redirect/
    redirect_port: int | None = None  # None: the port in the edge's address, if any
    head_timeout_ms: int = HEAD_TIMEOUT.default
    keepalive_timeout_ms: int = KEEPALIVE_TIMEOUT.default
    max_head_bytes: int = MAX_HEAD.default
    max_body_bytes: int = MAX_BODY.default


WEBRTC_SCHEMES = ("http", "https")
WHIP_PATH = "/{path}/whip"
WHEP_PATH = "/{path}/whep"


@dataclass(slots=True)
class WebRtcConfig:
    """WHIP and WHEP (``POST /whip/<path>``, ``POST /whep/<path>``): 307 to an edge."""

    enabled: bool = True
    redirect_scheme: str = "http"
    # None: the port in the edge's address, else the port the client reached us on
    redirect_port: int | None = None
    # The resource's path on the edge; {path} is what followed /whip/ or /whep/.
    # The defaults are MediaMTX's layout (http://edge:8889/<path>/whip).
    whip_path: str = WHIP_PATH
    whep_path: str = WHEP_PATH


@dataclass(slots=True)
class ClientsConfig:
    """Caps on the client port's connections, whatever their protocol."""

    max_connections: int = MAX_CLIENTS.default
    max_connections_per_address: int = MAX_CLIENTS_PER_ADDRESS.default


@dataclass(slots=True)
class BalancerConfig:
    key: SharedKey
    listen: Endpoint = Endpoint("", DEFAULT_UDP_PORT)
    message_timeout_ms: int = MESSAGE_TIMEOUT.default
    missed_reports: int = MISSED_REPORTS.default
    max_silence_ms: int = MAX_SILENCE.default
    max_clock_skew_ms: int = MAX_CLOCK_SKEW.default
    redirector: str = "concurrent-connects"
    # a named stream's viewers where it flows, whatever the redirector (stream-affinity:
    # always), within balance_factor × the mean load
    affinity: bool = False
    balance_factor: float = DEFAULT_BALANCE_FACTOR
    affinity_floor: int = AFFINITY_FLOOR.default
    peers: int = PEERS.default
    grace_ms: int = GRACE.default
    http: HttpConfig = field(default_factory=HttpConfig)
    clients: ClientsConfig = field(default_factory=ClientsConfig)
    management: ManagementConfig | None = None  # None: no management port (embedding)
    rtmp: RtmpConfig = field(default_factory=RtmpConfig)
    rtsp: RtspConfig = field(default_factory=RtspConfig)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    # Replay marks and the last pool, kept across restarts (lbmgmt/balancer/state.py);
    # None: none kept (embedding, tests). From a config file: beside it unless set.
    state_file: Path | None = None


def _endpoint(section: Section, key: str, default: Endpoint) -> Endpoint:
    text = section.get_str(key, None)
    if text is None:
        return default
    try:
        return Endpoint.parse(text, default_port=default.port)
    except ValueError as exc:
        section.fail(key, str(exc))


def load_balancer_config(path: str | Path) -> BalancerConfig:
    cfg = ConfigFile.load(path)
    cfg.check_tables(["balancer", "http", "clients", "management", "rtmp", "rtsp", "webrtc",
                      "routing"])
    bal = cfg.section("balancer", required=True)
    listen = _endpoint(bal, "listen", Endpoint("", DEFAULT_UDP_PORT))
    key_text = bal.get_str("key", None, secret=True)
    key_file = bal.get_str("key_file", None)
    if (key_text is None) == (key_file is None):
        bal.fail("key", "set exactly one of key or key_file")
    if key_file is not None:
        key_path = cfg.path.parent / key_file
        try:
            key_text = key_path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            bal.fail("key_file", f"cannot read {key_path}: {getattr(exc, 'strerror', exc)}")
        if not key_text:
            bal.fail("key_file", f"{key_path} is empty")
    assert key_text is not None
    problem = key_problem(key_text)
    if problem is not None:
        bal.fail("key_file" if key_file is not None else "key", f"the key {problem}")
    timeout = MESSAGE_TIMEOUT.read(bal)
    missed = MISSED_REPORTS.read(bal)
    max_silence = MAX_SILENCE.read(bal)
    skew = MAX_CLOCK_SKEW.read(bal)
    redirector = bal.get_str("redirector", "concurrent-connects")
    affinity = bal.get_bool("affinity", False)
    balance_factor = bal.get_number("balance_factor", DEFAULT_BALANCE_FACTOR)
    if not 1.0 < balance_factor <= MAX_BALANCE_FACTOR:
        bal.fail("balance_factor", f"must be more than 1 and at most {MAX_BALANCE_FACTOR:g} "
                                   f"(1.25: an edge takes a stream's viewer up to 25 % over "
                                   f"the mean), not {balance_factor}")
    affinity_floor = AFFINITY_FLOOR.read(bal)
    peers = PEERS.read(bal)
    grace = GRACE.read(bal)
    state_text = bal.get_str("state_file", None, nonempty=False)
    if state_text is None:
        state_file: Path | None = default_file(cfg.path, ".state")  # (lbmgmt.statedir)
    elif state_text == "":
        state_file = None
    else:
        state_file = cfg.path.parent / state_text
    try:
        redirector_class(redirector)
    except PluginError as exc:
        bal.fail("redirector", str(exc))
    bal.finish()

    http = cfg.section("http")
    http_cfg = HttpConfig(
        listen=http.get_endpoints("listen", (Endpoint("", DEFAULT_HTTP_PORT),),
                                  default_port=DEFAULT_HTTP_PORT),
        enable_server_info_xml=http.get_bool("enable_server_info_xml", True),
        redirect_scheme=http.get_str("redirect_scheme", "http"),
        redirect_port=http.get_int("redirect_port", None, min=1, max=65535),
        head_timeout_ms=HEAD_TIMEOUT.read(http),
        keepalive_timeout_ms=KEEPALIVE_TIMEOUT.read(http),
        max_head_bytes=MAX_HEAD.read(http),
        max_body_bytes=MAX_BODY.read(http),
    )
    if http_cfg.redirect_scheme not in ("http", "https"):
        http.fail("redirect_scheme", "must be http or https")
    http.finish()
    webrtc = cfg.section("webrtc")
    webrtc_cfg = WebRtcConfig(
        enabled=webrtc.get_bool("enabled", True),
        redirect_scheme=webrtc.get_str("redirect_scheme", "http"),
        redirect_port=webrtc.get_int("redirect_port", None, min=1, max=65535),
        whip_path=webrtc.get_str("whip_path", WHIP_PATH),
        whep_path=webrtc.get_str("whep_path", WHEP_PATH))
    if webrtc_cfg.redirect_scheme not in WEBRTC_SCHEMES:
        webrtc.fail("redirect_scheme", "must be http or https")
    for key in ("whip_path", "whep_path"):
        template = getattr(webrtc_cfg, key)
        if not template.startswith("/") or "{path}" not in template:
            webrtc.fail(key, "must start with '/' and hold {path}")
        if not template.isascii() or any(c <= " " or c in "#\x7f" for c in template):
            webrtc.fail(key, "must be ASCII without spaces, controls or '#' "
                             "(percent-encode anything else)")
    webrtc.finish()
    clients = cfg.section("clients")
    clients_cfg = ClientsConfig(MAX_CLIENTS.read(clients), MAX_CLIENTS_PER_ADDRESS.read(clients))
    clients.finish()
    return BalancerConfig(key=SharedKey(key_text), listen=listen, message_timeout_ms=timeout,
                          missed_reports=missed, max_silence_ms=max_silence,
                          max_clock_skew_ms=skew, redirector=redirector, grace_ms=grace,
                          affinity=affinity, balance_factor=balance_factor,
                          affinity_floor=affinity_floor, peers=peers,
                          http=http_cfg, clients=clients_cfg,
                          management=load_management(cfg, BALANCER_PORT),
                          rtmp=load_rtmp(cfg), rtsp=load_rtsp(cfg), webrtc=webrtc_cfg,
                          routing=load_routing(cfg), state_file=state_file)


CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})  # GeoIP's codes


def _networks(section: Section, key: str) -> tuple[Network, ...]:
    out = []
    for text in section.get_str_list(key, []):
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as exc:
            section.fail(key, f"not a network (address/prefix): {exc}")
    return tuple(out)


def load_routing(cfg: ConfigFile) -> RoutingConfig:
    """``[routing]``: client networks and GeoIP areas to edge groups, trusted proxies,
    private networks and the address map (docs/operations.md, "Routing")."""
    section = cfg.section("routing")
    out = RoutingConfig(trusted_proxies=_networks(section, "trusted_proxies"),
                        private_networks=_networks(section, "private_networks"))
    if any(n.prefixlen == 0 for n in out.trusted_proxies):
        section.fail("trusted_proxies", "a /0 network trusts every address: any client "
                     "could name its own")
    out.forwarded_header = section.get_str("forwarded_header", "x-forwarded-for").lower()
    if out.forwarded_header not in FORWARDED_HEADERS:
        section.fail("forwarded_header", "must be X-Forwarded-For or Forwarded (the one "
                     "your proxies write: the other would be a client's)")
    database = section.get_str("geoip_database", None)
    if database is not None:
        path = cfg.path.parent / database
        try:
            import maxminddb
            with maxminddb.open_database(str(path)) as reader:
                kind = reader.metadata().database_type
        except ImportError:
            section.fail("geoip_database", "needs the maxminddb package (pip install maxminddb)")
        except (OSError, ValueError) as exc:  # InvalidDatabaseError is a RuntimeError...
            section.fail("geoip_database", f"cannot open {path}: {exc}")
        except RuntimeError as exc:
            section.fail("geoip_database", f"{path} is not a MaxMind database: {exc}")
        if "Country" not in kind and "City" not in kind:
            section.fail("geoip_database", f"{path} is a {kind} database, not a GeoIP2/"
                         "GeoLite2 Country or City one")
        out.geoip_database = str(path)
    rules = section.data.get("rules", [])
    section.mark_read("rules")  # (its tables are read below, one by one)
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        section.fail("rules", "must be [[routing.rules]] tables")
    addresses = section.get_table("addresses", {})
    section.finish()
    built = []
    for number, table in enumerate(rules, 1):
        try:
            built.append(_rule(Section(cfg, "rule", table), out))
        except ConfigError as exc:  # said of the rule by its number: tables have no name
            section.fail("rules", f"rule {number}: {(exc.field or '').removeprefix('rule.')}: "
                                 f"{exc.message}")
    out.rules = tuple(built)
    for reported, sent in addresses.items():
        if not isinstance(sent, str) or not sent.strip():
            section.fail("addresses", f"{reported!r} must map to a non-empty address string")
    out.addresses = dict(addresses)
    return out


def _rule(rule: Section, routing: RoutingConfig) -> Rule:
    groups = rule.get_str_list("groups")
    networks = _networks(rule, "networks")
    countries = frozenset(c.upper() for c in rule.get_str_list("countries", []))
    continents = frozenset(c.upper() for c in rule.get_str_list("continents", []))
    rule.finish()
    bad = sorted(c for c in countries if len(c) != 2 or not c.isalpha() or not c.isascii())
    if bad:
        rule.fail("countries", f"ISO 3166 two-letter codes (DE, US), not {bad[0]!r}")
    bad = sorted(continents - CONTINENTS)
    if bad:
        rule.fail("continents", f"one of {', '.join(sorted(CONTINENTS))}, not {bad[0]!r}")
    if not groups:
        rule.fail("groups", "must name at least one group")
    if not (networks or countries or continents):
        rule.fail("networks", "a rule needs networks, countries or continents")
    if (countries or continents) and routing.geoip_database is None:
        rule.fail("countries", "countries and continents need [routing] geoip_database")
    return Rule(tuple(groups), networks, countries, continents)


__all__ = ["BalancerConfig", "ClientsConfig", "ConfigError", "HttpConfig", "WebRtcConfig",
           "load_balancer_config"]
