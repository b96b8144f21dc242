"""Which edges a client should get, by where it is: groups, private addresses, proxies.

Sans-IO: ``Routing`` is built from the ``[routing]`` table (and, when one is
configured, a GeoIP2/GeoLite2 database the operator supplies, read with
``maxminddb``) and answers, for a client's IP address:

- ``client(peer, forwarded)``: the client's address. The one header the proxies
  write (``forwarded_header``: ``X-Forwarded-For``, or ``Forwarded``; the other
  is a client's and ignored) is honoured only when the connection comes from a
  configured trusted proxy, every line of it in order, read right to left past
  the trusted hops (a client can put anything at the left of the list; only
  what a trusted proxy appended counts). A hop that is no address (``unknown``,
  an obfuscated ``_hidden``, garbage) makes the client unknown (None): no
  group, never private;
- ``groups(ip)``: the ordered groups it should be sent to, from the first rule
  that matches it (CIDR networks, or the GeoIP country or continent); the
  balancer tries each group in order and then any edge;
- ``private(ip)``: whether it is inside the fleet's own networks, where edges'
  private addresses are reached;
- ``address(entry, private)``: the address to send it to: the edge's private one
  for a private client (if the edge reports one), else its redirect address,
  through the operator's map (for edges that cannot know their public name).

Lookups are cached per address (bounded), so a busy client port pays the parse
and the rule walk once per client, not once per request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lbmgmt.balancer.registry import ServerEntry

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
CACHE_SIZE = 4096  # client addresses whose groups and privacy are kept
MAX_FORWARDED_HOPS = 16  # X-Forwarded-For entries looked at, from the right


@dataclass(frozen=True, slots=True)
class Rule:
    """Clients matching any of ``networks``, ``countries`` or ``continents`` go to
    ``groups``, in that order."""

    groups: tuple[str, ...]
    networks: tuple[Network, ...] = ()
    countries: frozenset[str] = frozenset()  # ISO 3166-1 alpha-2, upper case
    continents: frozenset[str] = frozenset()  # "EU", "NA", … (GeoIP continent codes)


FORWARDED_HEADERS = ("x-forwarded-for", "forwarded")


@dataclass(slots=True)
class RoutingConfig:
    rules: tuple[Rule, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()
    forwarded_header: str = "x-forwarded-for"  # the one the trusted proxies write
    private_networks: tuple[Network, ...] = ()
    geoip_database: str | None = None  # a GeoIP2/GeoLite2 Country or City .mmdb file
    addresses: dict[str, str] = field(default_factory=dict)  # reported -> sent to clients

    @property
    def active(self) -> bool:
        """Anything to do per client (else the client port skips this entirely)."""
        return bool(self.rules or self.private_networks or self.trusted_proxies)


def _ip(text: str) -> Address | None:
    text = text.strip().strip('"')
    if "%" in text:  # an IPv6 zone: not part of whom the client is (and unbounded)
        head, _, rest = text.partition("%")
        text = head + ("]" + rest.partition("]")[2] if text.startswith("[") else "")
    if text.startswith("["):  # "[v6]:port" in Forwarded
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # "v4:port"
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # "::ffff:10.0.0.1" from a dual-stack socket
    return address


def _within(address: Address, networks: Iterable[Network]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


class Routing:
    def __init__(self, config: RoutingConfig,
                 geoip: Callable[[str], dict[str, Any] | None] | None = None) -> None:
        """``geoip``: an address's record (``maxminddb.Reader.get``), if a database is used."""
        self.config = config
        self.active = config.active  # groups or privacy to work out per client
        self.rewrites = bool(config.private_networks or config.addresses)  # addresses differ
        self.geoip = geoip
        self._groups: dict[str, tuple[str, ...]] = {}
        self._private: dict[str, bool] = {}
        self._trusted: dict[str, bool] = {}  # peer address -> a trusted proxy
        self.lookups = 0  # cache misses: rule walks done
        self.geoip_misses = 0  # addresses the database had no country for

    # -- who the client is ------------------------------------------------------------
    def client(self, peer: str, headers: list[tuple[bytes, bytes]] | None = None
               ) -> str | None:
        """The client's address: ``peer``, or the one a trusted proxy says it relays
        (``headers``: the request's); None when the proxy cannot say (unknown)."""
        trusted = self.config.trusted_proxies
        if not trusted or not headers:
            return peer
        is_trusted = self._trusted.get(peer)
        if is_trusted is None:  # (once per peer: parsing an address costs a microsecond)
            peer_ip = _ip(peer)
            is_trusted = peer_ip is not None and _within(peer_ip, trusted)
            if len(self._trusted) >= CACHE_SIZE:
                self._trusted.clear()
            self._trusted[peer] = is_trusted
        if not is_trusted:
            return peer  # anyone can send the headers: only a trusted proxy's count
        wanted = self.config.forwarded_header.encode()
        lines = [v for n, v in headers if n.lower() == wanted]
        if not lines:
            return peer  # (the proxy's own request)
        joined = b",".join(lines).decode("latin-1")  # repeated lines are one list, in order
        hops: list[str] = []
        if wanted == b"forwarded":
            for element in joined.split(","):
                found = "unknown"  # an element without for= says nothing of the client
                for pair in element.split(";"):
                    name, _, value = pair.strip().partition("=")
                    if name.lower() == "for":
                        found = value
                hops.append(found)
        else:
            hops = joined.split(",")
        for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
            address = _ip(hop)
            if address is None:
                return None  # unknown, hidden or garbage: not an address to act on
            if not _within(address, trusted):
                return str(address)
        return peer

    # -- where it goes ----------------------------------------------------------------
    def groups(self, client: str) -> tuple[str, ...]:
        """Its groups, in the order to try them; () for none (any edge)."""
        if not self.config.rules:
            return ()
        cached = self._groups.get(client)
        if cached is not None:
            return cached
        found = self._match(client)
        if len(self._groups) >= CACHE_SIZE:
            self._groups.clear()
        self._groups[client] = found
        return found

    def private(self, client: str) -> bool:
        networks = self.config.private_networks
        if not networks:
            return False
        cached = self._private.get(client)
        if cached is None:
            address = _ip(client)
            cached = address is not None and _within(address, networks)
            if len(self._private) >= CACHE_SIZE:
                self._private.clear()
            self._private[client] = cached
        return cached

    def address(self, entry: ServerEntry, private: bool) -> str:
        report = entry.report
        if private and report.private_address:
            return report.private_address
        mapped = self.config.addresses
        return mapped.get(report.address, report.address) if mapped else report.address

    def _match(self, client: str) -> tuple[str, ...]:
        self.lookups += 1
        address = _ip(client)
        if address is None:
            return ()
        country = continent = None
        for rule in self.config.rules:
            if rule.networks and _within(address, rule.networks):
                return rule.groups
            if (rule.countries or rule.continents) and self.geoip is not None:
                if country is None:
                    country, continent = self._geo(str(address))
                if country in rule.countries or continent in rule.continents:
                    return rule.groups
        return ()

    def _geo(self, address: str) -> tuple[str, str]:
        try:
            record = self.geoip(address) if self.geoip is not None else None
        except ValueError:  # not an address the database can look up
            record = None
        country = continent = ""
        if isinstance(record, dict):
            c = record.get("country") or record.get("registered_country")
            if isinstance(c, dict):
                country = str(c.get("iso_code") or "")
            k = record.get("continent")
            if isinstance(k, dict):
                continent = str(k.get("code") or "")
        if not country and not continent:
            self.geoip_misses += 1
        return country, continent
