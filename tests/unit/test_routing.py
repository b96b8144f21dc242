"""Routing a real fleet, sans-IO: groups by network and GeoIP, trusted proxies, private
and mapped addresses, bandwidth limits, and the JSON status; time and addresses by hand.

The same with real processes and real client addresses: tests/e2e/test_routing.py.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import maxminddb
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from lbmgmt.balancer.config import load_balancer_config
from lbmgmt.balancer.core import BalancerCore
from lbmgmt.balancer.routing import Routing, RoutingConfig, Rule
from lbmgmt.balancer.serverinfo import render_server_info, render_server_info_json
from lbmgmt.configfile import ConfigError
from lbmgmt.edge.bandwidth import InterfaceBandwidth
from lbmgmt.edge.monitors import bw_out, stat_page
from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey
from lbmgmt.status.wire import decode_payload, encode_payload

KEY = SharedKey("routing-key-0123456789")
T0 = 100.0
WALL = 1_800_000_000.0
NET = ipaddress.ip_network


def geo_database(path: Path) -> Path:
    """A GeoLite2-Country database as MaxMind builds them, for three made-up clients."""
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    writer.insert_network(IPSet(["198.51.100.0/24"]), {"country": {"iso_code": "DE"},
                                                       "continent": {"code": "EU"}})
    writer.insert_network(IPSet(["203.0.113.0/24"]), {"country": {"iso_code": "US"},
                                                      "continent": {"code": "NA"}})
    writer.insert_network(IPSet(["192.0.2.0/24"]), {"country": {"iso_code": "JP"},
                                                    "continent": {"code": "AS"}})
    writer.to_db_file(str(path))
    return path


def core(routing: Routing | None = None, redirector: str = "concurrent-connects"
         ) -> BalancerCore:
    return BalancerCore(KEY, timeout=5.0, grace=0.5, max_clock_skew=30.0,
                        redirector=redirector, routing=routing)


SEALERS: dict[tuple[int, int], ReportSealer] = {}


def report(core: BalancerCore, n: int, address: str, load: float = 0, **fields) -> None:
    sealer = SEALERS.setdefault((id(core), n), ReportSealer(uuid.UUID(int=n)))
    core.receive_datagram(sealer.seal(
        Report(EdgeState.RUNNING, address, load, 2500, **fields), KEY, now=WALL),
        now=T0, wall=WALL)


# -- who the client is --------------------------------------------------------------------
def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"X-Forwarded-For", v.encode()) for v in values]


def test_forwarded_headers_count_only_from_a_trusted_proxy_read_from_the_right():
    routing = Routing(RoutingConfig(trusted_proxies=(NET("10.0.0.0/8"),)))
    lie = "6.6.6.6, 198.51.100.7, 10.1.1.1"  # a client's lie, the client, an inner proxy
    assert routing.client("10.0.0.2", xff(lie)) == "198.51.100.7"
    assert routing.client("203.0.113.9", xff(lie)) == "203.0.113.9"  # not a trusted proxy
    assert routing.client("10.0.0.2", xff("10.0.0.3, 10.0.0.4")) == "10.0.0.2"  # all trusted
    assert routing.client("::ffff:10.0.0.2", xff("192.0.2.1")) == "192.0.2.1"  # dual stack
    assert routing.client("10.0.0.2", []) == "10.0.0.2"  # the proxy's own request
    assert Routing(RoutingConfig()).client("10.0.0.2", xff(lie)) == "10.0.0.2"  # none trusted
    # (found by an attack) repeated lines are one list, in order: the proxy's line is last
    assert routing.client("10.0.0.2", xff("127.0.0.70", "203.0.113.7")) == "203.0.113.7"
    # a hop that is no address makes the client unknown: never the proxy's own (private)
    for hidden in ("198.51.100.7, junk", "unknown", "_hidden"):
        assert routing.client("10.0.0.2", xff(hidden)) is None
    # IPv6 zones are not part of the address (nor of the cache's keys)
    assert routing.client("10.0.0.2", xff("fe80::1%" + "x" * 5000)) == "fe80::1"


def test_only_the_header_the_proxies_write_counts():
    # (found by an attack) nginx appends to X-Forwarded-For and passes a client's own
    # Forwarded through: believing both let a client name itself
    routing = Routing(RoutingConfig(trusted_proxies=(NET("10.0.0.0/8"),)))
    headers = [(b"Forwarded", b"for=127.0.0.70"), *xff("203.0.113.7")]
    assert routing.client("10.0.0.2", headers) == "203.0.113.7"
    forwarded = Routing(RoutingConfig(trusted_proxies=(NET("10.0.0.0/8"),),
                                      forwarded_header="forwarded"))
    assert forwarded.client("10.0.0.2", [(b"X-Forwarded-For", b"127.0.0.70"),
                                         (b"Forwarded", b'for="[2001:db8::7]:4711";proto=https'),
                                         (b"forwarded", b"for=10.0.0.3")]) == "2001:db8::7"
    assert forwarded.client("10.0.0.2", [(b"Forwarded", b"for=_hidden")]) is None
    assert forwarded.client("10.0.0.2", [(b"Forwarded", b"proto=https")]) is None


def test_an_unknown_client_gets_no_group_and_no_private_address():
    routing = Routing(RoutingConfig(rules=(Rule(("a",), networks=(NET("0.0.0.0/0"),)),),
                                    private_networks=(NET("10.0.0.0/8"),)))
    balancer = core(routing)
    report(balancer, 1, "pub:1935", private_address="10.9.9.9:1935", group="a")
    entry = balancer.redirect("http", T0, None)
    assert entry is not None and balancer.address_for(entry, None) == "pub:1935"
    assert balancer.routed == {"in_group": 0, "fallback": 0}


# -- where it goes ------------------------------------------------------------------------
def test_the_first_matching_rule_gives_the_groups_in_order_then_any_edge():
    routing = Routing(RoutingConfig(rules=(
        Rule(("eu-west", "eu-central"), networks=(NET("198.51.100.0/24"),)),
        Rule(("us",), networks=(NET("198.51.0.0/16"), NET("2001:db8::/32"))))))
    balancer = core(routing)
    report(balancer, 1, "west:1935", load=5, group="eu-west")
    report(balancer, 2, "central:1935", load=0, group="eu-central")
    report(balancer, 3, "us:1935", load=0, group="us")
    report(balancer, 4, "nogroup:1935", load=0)

    def sent(client: str) -> str:
        entry = balancer.redirect("http", T0, client)
        assert entry is not None
        return entry.address
    assert sent("198.51.100.7") == "west:1935"  # its first group, though busier
    assert sent("198.51.7.7") == "us:1935"
    assert sent("2001:db8::1") == "us:1935"
    balancer.drain(uuid.UUID(int=1))
    assert sent("198.51.100.7") == "central:1935"  # the next group in its list
    balancer.drain(uuid.UUID(int=2))
    assert sent("198.51.100.7") in {"us:1935", "nogroup:1935"}  # then any edge
    assert balancer.routed == {"in_group": 4, "fallback": 1}
    assert balancer.group_redirects["eu-west"] == 1
    status = balancer.group_status(T0)
    assert status["eu-west"] == {"edges": 1, "available": 0, "redirects": 1}
    assert status[""]["edges"] == 1


@pytest.mark.parametrize("redirector", ["concurrent-connects", "weighted", "p2c",
                                        "round-robin", "bandwidth"])
def test_every_redirector_keeps_to_the_group_and_spreads_within_it(redirector: str):
    routing = Routing(RoutingConfig(rules=(Rule(("a",), networks=(NET("0.0.0.0/0"),)),)))
    balancer = core(routing, redirector)
    for n in range(6):
        report(balancer, n + 1, f"e{n}:1935", group="a" if n < 3 else "b", capacity=100,
               bandwidth=0.0, bandwidth_limit=1e9)
    chosen = [balancer.redirect("http", T0, "192.0.2.1").address for _ in range(30)]
    assert set(chosen) == {"e0:1935", "e1:1935", "e2:1935"}


def test_an_edge_regrouped_by_a_report_moves_between_groups():
    routing = Routing(RoutingConfig(rules=(Rule(("a",), networks=(NET("0.0.0.0/0"),)),)))
    balancer = core(routing)
    report(balancer, 1, "e1:1935", group="a")
    assert balancer.redirect("http", T0, "192.0.2.1").address == "e1:1935"
    report(balancer, 1, "e1:1935", group="b")
    report(balancer, 2, "e2:1935", group="a", load=50)
    assert {balancer.redirect("http", T0, "192.0.2.1").address for _ in range(5)} == {
        "e2:1935"}


def test_geoip_countries_and_continents_choose_groups(tmp_path: Path):
    path = geo_database(tmp_path / "geo.mmdb")
    reader = maxminddb.open_database(str(path), maxminddb.MODE_MEMORY)
    routing = Routing(RoutingConfig(rules=(Rule(("de",), countries=frozenset({"DE"})),
                                           Rule(("eu", "us"), continents=frozenset({"EU"})),
                                           Rule(("us",), continents=frozenset({"NA"}))),
                                    geoip_database=str(path)), reader.get)
    assert routing.groups("198.51.100.7") == ("de",)
    assert routing.groups("203.0.113.7") == ("us",)
    assert routing.groups("192.0.2.7") == ()  # Asia: no rule, any edge
    assert routing.groups("10.0.0.1") == () and routing.geoip_misses == 1  # not in it
    lookups = routing.lookups
    assert routing.groups("198.51.100.7") == ("de",) and routing.lookups == lookups  # cached


def test_private_clients_get_the_private_address_and_the_map_rewrites_the_rest():
    routing = Routing(RoutingConfig(private_networks=(NET("10.0.0.0/8"),),
                                    addresses={"internal-1:1935": "edge1.example.net:1935"}))
    balancer = core(routing)
    report(balancer, 1, "internal-1:1935", private_address="10.1.0.5:1935")
    [entry] = list(balancer.registry)
    assert balancer.address_for(entry, "10.9.9.9") == "10.1.0.5:1935"
    assert balancer.address_for(entry, "198.51.100.7") == "edge1.example.net:1935"
    assert balancer.address_for(entry, None) == "edge1.example.net:1935"
    plain = core()
    report(plain, 1, "e:1935", private_address="10.1.0.5:1935")
    assert plain.address_for(next(iter(plain.registry)), "10.9.9.9") == "e:1935"


# -- bandwidth ----------------------------------------------------------------------------
@pytest.mark.parametrize("redirector", ["concurrent-connects", "weighted", "p2c",
                                        "round-robin", "bandwidth"])
def test_no_redirector_sends_a_client_to_an_edge_at_its_bandwidth_limit(redirector: str):
    balancer = core(redirector=redirector)
    report(balancer, 1, "full:1935", load=0, bandwidth=1e9, bandwidth_limit=1e9)
    report(balancer, 2, "room:1935", load=50, bandwidth=1e6, bandwidth_limit=1e9)
    assert {balancer.redirect("http", T0).address for _ in range(20)} == {"room:1935"}
    [full] = [e for e in balancer.status(T0).servers if e.address == "full:1935"]
    assert not full.available


def test_the_bandwidth_redirector_balances_headroom_without_a_herd():
    balancer = core(redirector="bandwidth")
    report(balancer, 1, "big:1935", load=10, bandwidth=25e6, bandwidth_limit=1e9)
    report(balancer, 2, "small:1935", load=0, bandwidth=0.0, bandwidth_limit=1e8)
    chosen = [balancer.redirect("http", T0).address for _ in range(200)]
    # headroom: 975 Mbit/s against 100 Mbit/s, at 2.5 Mbit/s a client: small fills up
    # to its limit (40 clients) and never past it; big takes the rest
    assert chosen.count("small:1935") <= 40 and chosen.count("big:1935") >= 160
    # (found by an attack) an edge with clients and no bandwidth yet: pending clients
    # still count, at least CLIENT_BPS each, so it does not take every client sent
    quiet = core(redirector="bandwidth")
    report(quiet, 1, "quiet:1935", load=1, bandwidth=0.0, bandwidth_limit=50e6)
    report(quiet, 2, "other:1935", load=0, bandwidth=0.0, bandwidth_limit=50e6)
    spread = [quiet.redirect("http", T0).address for _ in range(40)]
    assert 15 <= spread.count("quiet:1935") <= 25
    twins = core(redirector="bandwidth")  # two idle edges alike: no herd onto either
    report(twins, 1, "a:1935", bandwidth=0.0, bandwidth_limit=1e9)
    report(twins, 2, "b:1935", bandwidth=0.0, bandwidth_limit=1e9)
    first = [twins.redirect("http", T0).address for _ in range(10)]
    assert 4 <= first.count("a:1935") <= 6


# -- status documents ---------------------------------------------------------------------
def test_server_info_json_says_what_the_xml_says():
    balancer = core()
    report(balancer, 1, "e1:1935", load=3, group="eu", private_address="10.0.0.1:1935",
           bandwidth=1.5e6, bandwidth_limit=1e9, capacity=100)
    report(balancer, 2, "e2:1935")
    xml = ET.fromstring(render_server_info(balancer, T0))
    doc = json.loads(render_server_info_json(balancer, T0))
    assert (doc["serverCount"], doc["availableCount"], doc["redirector"]) == (
        int(xml.get("serverCount")), int(xml.get("availableCount")), xml.get("redirector"))
    assert doc["receiver"]["accepted"] == int(xml.find("Receiver").get("accepted"))
    for element, row in zip(xml.iter("Server"), doc["servers"], strict=True):
        for child in element:
            value = row[child.tag]
            text = "" if value is None else (
                str(value).lower() if isinstance(value, bool) else str(value))
            if child.tag == "secondsSinceReport":
                text = f"{value:.3f}"
            assert (child.text or "") == text, child.tag
    assert doc["servers"][0]["group"] == "eu" and doc["servers"][1]["group"] is None
    # per group: edges, available ones and clients sent, in both
    balancer.redirect("http", T0)
    doc = json.loads(render_server_info_json(balancer, T0))
    xml = ET.fromstring(render_server_info(balancer, T0))
    assert doc["groups"] == {row.get("name"): {k: int(row.get(k)) for k in (
        "edges", "available", "redirects")} for row in xml.iter("Group")}
    assert doc["groups"]["eu"]["edges"] == 1 and doc["groups"][""]["edges"] == 1
    plain = core()
    report(plain, 1, "e:1935")
    assert json.loads(render_server_info_json(plain, T0))["groups"] == {}  # no groups


def test_the_new_report_fields_travel_and_old_reports_still_decode():
    full = Report(EdgeState.RUNNING, "e:1935", 1, 2500, group="eu-west",
                  private_address="10.0.0.5:1935", bandwidth=12.5e6, bandwidth_limit=1e9)
    assert decode_payload(encode_payload(full)) == full
    plain = Report(EdgeState.RUNNING, "e:1935", 1, 2500)
    assert decode_payload(encode_payload(plain)) == plain
    for bad in ("a b:1935", "e:1935\r\nX: y", "e\x7f"):  # it goes into answers as it is
        with pytest.raises(ValueError):
            Report(EdgeState.RUNNING, bad, 1, 2500)
        with pytest.raises(ValueError):
            Report(EdgeState.RUNNING, "e:1935", 1, 2500, private_address=bad)
    for limit in (0.0, 1e-300):  # under 1 bit/s: refused (an absurd divisor)
        with pytest.raises(ValueError):
            Report(EdgeState.RUNNING, "e:1935", 1, 2500, bandwidth_limit=limit)


@pytest.mark.parametrize("redirector", ["weighted", "bandwidth"])
def test_absurd_figures_from_an_edge_rank_it_last_and_never_raise(redirector: str):
    balancer = core(redirector=redirector)
    report(balancer, 1, "absurd:1935", load=1e308, capacity=1e-300, bandwidth=1e308,
           bandwidth_limit=1.0)
    report(balancer, 2, "fine:1935", capacity=100, bandwidth=0.0, bandwidth_limit=1e9)
    assert {balancer.redirect("http", T0).address for _ in range(5)} == {"fine:1935"}


def test_a_group_name_is_forgotten_with_its_last_edge():
    balancer = core(Routing(RoutingConfig(rules=(Rule(("a",), networks=(NET("0.0.0.0/0"),)),))))
    for n in range(50):
        report(balancer, n + 1, f"e{n}:1935", group=f"g{n}")
    redirector = balancer.redirector
    assert len(redirector.groups) == 50  # type: ignore[attr-defined]
    for n in range(50):
        report(balancer, n + 1, f"e{n}:1935", group="same")
    assert set(redirector.groups) == {"same"}  # type: ignore[attr-defined]


# -- config -------------------------------------------------------------------------------
def load(tmp_path: Path, text: str):
    path = tmp_path / "balancer.toml"
    path.write_text('[balancer]\nkey = "k-0123456789abcdef"\nstate_file = ""\n' + text)
    return load_balancer_config(path)


def test_routing_config_loads_rules_proxies_networks_and_a_geoip_database(tmp_path: Path):
    geo_database(tmp_path / "geo.mmdb")
    cfg = load(tmp_path, '[routing]\ntrusted_proxies = ["10.0.0.1"]\n'
                         'private_networks = ["10.0.0.0/8", "fd00::/8"]\n'
                         'geoip_database = "geo.mmdb"\n'
                         '[[routing.rules]]\nnetworks = ["198.51.100.0/24"]\ngroups = ["a", "b"]\n'
                         '[[routing.rules]]\ncountries = ["de"]\ngroups = ["c"]\n'
                         '[routing.addresses]\n"int:1935" = "pub.example:1935"\n')
    routing = cfg.routing
    assert routing.trusted_proxies == (NET("10.0.0.1/32"),)
    assert routing.rules[0] == Rule(("a", "b"), networks=(NET("198.51.100.0/24"),))
    assert routing.rules[1].countries == frozenset({"DE"})
    assert routing.addresses == {"int:1935": "pub.example:1935"}
    assert routing.geoip_database == str(tmp_path / "geo.mmdb")


@pytest.mark.parametrize("text,words", [
    ('[routing]\ntrusted_proxies = ["10.0.0.300"]\n', "not a network"),
    ('[[routing.rules]]\nnetworks = ["10.0.0.0/8"]\n', "rule 1: groups"),
    ('[[routing.rules]]\ngroups = ["a"]\n', "needs networks, countries"),
    ('[[routing.rules]]\ncountries = ["DE"]\ngroups = ["a"]\n', "need [routing] geoip"),
    ('[[routing.rules]]\nnetworks = ["10.0.0.0/8"]\ngroups = ["a"]\nzone = 1\n', "unknown key"),
    ('[routing]\ngeoip_database = "missing.mmdb"\n', "cannot open"),
    ('[routing]\ngeoip_database = "balancer.toml"\n', "not a MaxMind database"),
    ('[routing]\ntrusted_proxies = ["0.0.0.0/0"]\n', "trusts every address"),
    ('[routing]\nforwarded_header = "X-Real-IP"\n', "X-Forwarded-For or Forwarded"),
    ('[routing]\ngeoip_database = "geo.mmdb"\n[[routing.rules]]\ncountries = ["Germany"]\n'
     'groups = ["a"]\n', "two-letter"),
    ('[routing]\ngeoip_database = "geo.mmdb"\n[[routing.rules]]\ncontinents = ["Europe"]\n'
     'groups = ["a"]\n', "one of AF"),
])
def test_routing_config_errors_name_the_field(tmp_path: Path, text: str, words: str):
    geo_database(tmp_path / "geo.mmdb")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.field.startswith("routing.") and words in str(caught.value)


# -- an edge's bandwidth ------------------------------------------------------------------
def test_an_interfaces_counter_gives_bits_per_second(tmp_path: Path):
    counter = tmp_path / "eth9" / "statistics" / "tx_bytes"
    counter.parent.mkdir(parents=True)
    counter.write_text("1000\n")
    meter = InterfaceBandwidth("eth9", root=tmp_path)
    assert meter.rate(10.0) is None  # nothing to compare with yet
    counter.write_text("126000\n")
    assert meter.rate(12.0) == 125_000 * 8 / 2  # 500 kbit/s
    counter.write_text("5\n")  # reset: said as nothing, once
    assert meter.rate(13.0) is None
    # over a window: a burst then silence reads as its average, not as the silence
    windowed = InterfaceBandwidth("eth9", root=tmp_path)
    counter.write_text("0\n")
    windowed.rate(0.0, window=2.5)
    counter.write_text("1250000\n")  # 10 Mbit in the first second
    assert windowed.rate(1.0, window=2.5) is None  # the window is not over yet
    assert windowed.rate(2.5, window=2.5) == 1_250_000 * 8 / 2.5  # 4 Mbit/s on average
    assert windowed.rate(2.6, window=2.5) == 4e6  # the last window's, till the next
    with pytest.raises(ValueError):
        InterfaceBandwidth("../etc")
    with pytest.raises(OSError):
        InterfaceBandwidth("nope", root=tmp_path).check()


def test_nginx_rtmp_bw_out_is_the_edges_bandwidth():
    page = stat_page(b"<rtmp><bw_out>1234567</bw_out><server /></rtmp>")
    assert bw_out(page) == 1234567.0
    assert bw_out(stat_page(b"<rtmp><bw_out>x</bw_out></rtmp>")) is None
    assert bw_out(stat_page(b"<rtmp />")) is None


def test_an_edge_config_says_its_group_private_address_and_bandwidth(tmp_path: Path):
    from lbmgmt.edge.config import load_edge_config
    (tmp_path / "targets.txt").write_text("")
    path = tmp_path / "edge.toml"
    path.write_text('[edge]\nredirect_address = "e.example:1935"\ngroup = "eu-west"\n'
                    'private_address = "10.0.0.5:1935"\nbandwidth_limit_mbps = 2.5\n'
                    'bandwidth_interface = "lo"\n')
    config = load_edge_config(path)
    assert (config.group, config.private_address, config.bandwidth_limit,
            config.bandwidth_interface) == ("eu-west", "10.0.0.5:1935", 2.5e6, "lo")
    path.write_text('[edge]\nredirect_address = "e:1"\nbandwidth_interface = "nope0"\n')
    with pytest.raises(ConfigError) as caught:
        load_edge_config(path)
    assert caught.value.field == "edge.bandwidth_interface" and "nope0" in str(caught.value)
