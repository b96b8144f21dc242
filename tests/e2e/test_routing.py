"""Routing with real processes and real client addresses: curl from 127.0.0.x.

Loopback's whole 127.0.0.0/8 is this host, so ``curl --interface 127.0.0.2`` is a
client at another address: the rules (CIDR and a GeoIP database the test builds
with mmdb-writer, as MaxMind's own tools would), the trusted proxy's
X-Forwarded-For and the private networks each see a different client. An edge
measures its bandwidth from a real interface's counters (``lo``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from tests.e2e.fleet import DEADLINE, Balancer, Fleet, wait_until

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")]


def geo(path: Path) -> str:
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    writer.insert_network(IPSet(["127.0.0.2/32"]), {"country": {"iso_code": "DE"},
                                                    "continent": {"code": "EU"}})
    writer.insert_network(IPSet(["127.0.0.3/32"]), {"country": {"iso_code": "US"},
                                                    "continent": {"code": "NA"}})
    writer.to_db_file(str(path))
    return str(path)


async def curl(url: str, source: str, *headers: str) -> str:
    args = ["curl", "-sS", "--interface", source, url]
    for header in headers:
        args += ["-H", header]
    done = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True,
                                   timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def listed(fleet: Fleet, lb: Balancer, count: int) -> None:
    async def there():
        return len(await fleet.servers(lb)) == count
    await wait_until(there, what=f"{count} edges listed")


async def test_clients_go_to_their_groups_by_network_country_and_trusted_proxy(fleet):
    lb = fleet.balancer(config={"routing": {
        "geoip_database": geo(fleet.workdir / "geo.mmdb"),
        "trusted_proxies": ["127.0.0.5/32"],
        "rules": [{"networks": ["127.0.0.4/32"], "groups": ["asia", "eu"]},
                  {"countries": ["DE"], "groups": ["eu"]},
                  {"continents": ["NA"], "groups": ["us"]}]}})
    for group in ("eu", "us", "asia"):
        fleet.edge(group, [lb], address=f"{group}.example:1935", config={"edge": {"group": group}})
    await listed(fleet, lb, 3)
    url = f"{lb.url}/loadbalancer"
    assert await curl(url, "127.0.0.2") == "redirect=eu.example:1935"  # DE
    assert await curl(url, "127.0.0.3") == "redirect=us.example:1935"  # North America
    assert await curl(url, "127.0.0.4") == "redirect=asia.example:1935"  # its network
    # behind the trusted proxy, the client it names; anyone else's header is ignored
    assert await curl(url, "127.0.0.5", "X-Forwarded-For: 127.0.0.3") == (
        "redirect=us.example:1935")
    # the one header the proxy writes, every line of it: its own line comes last
    assert await curl(url, "127.0.0.5", "X-Forwarded-For: 127.0.0.4",
                      "X-Forwarded-For: 127.0.0.2") == "redirect=eu.example:1935"
    # an untrusted sender's header is ignored: .6 matches no rule, so any edge
    assert await curl(url, "127.0.0.6", "X-Forwarded-For: 127.0.0.4") in {
        f"redirect={g}.example:1935" for g in ("eu", "us", "asia")}
    groups = await asyncio.to_thread(lb.attribute, "Groups")
    assert {g for g, row in groups.items() if row["redirects"]} == {"eu", "us", "asia"}
    assert groups["eu"]["edges"] == 1 and groups["eu"]["available"] == 1
    routed = await asyncio.to_thread(lb.attribute, "Routed")
    assert routed == {"in_group": 5, "fallback": 0}
    status = json.loads(await curl(f"{url}?serverInfoJSON", "127.0.0.1"))
    assert sorted(s["group"] for s in status["servers"]) == ["asia", "eu", "us"]


async def test_a_client_in_the_fleets_network_gets_the_edges_private_address(fleet):
    lb = fleet.balancer(config={"routing": {"private_networks": ["127.0.0.8/32"],
                                            "addresses": {"e.internal:1935":
                                                          "e.example.net:1935"}}})
    fleet.edge("e", [lb], address="e.internal:1935",
               config={"edge": {"private_address": "10.9.9.9:1935"}})
    await listed(fleet, lb, 1)
    assert await curl(f"{lb.url}/loadbalancer", "127.0.0.8") == "redirect=10.9.9.9:1935"
    assert await curl(f"{lb.url}/loadbalancer", "127.0.0.9") == (
        "redirect=e.example.net:1935")  # the operator's map, for everyone else
    found = await asyncio.to_thread(subprocess.run, [
        "curl", "-sS", "-o", "/dev/null", "-w", "%{redirect_url}", "--interface", "127.0.0.8",
        f"{lb.url}/redirect/live/s.m3u8"], capture_output=True, text=True, timeout=DEADLINE)
    assert found.stdout == "http://10.9.9.9:1935/live/s.m3u8"


async def test_an_edge_over_its_bandwidth_limit_gets_no_client(fleet):
    lb = fleet.balancer()
    # both measure loopback's real counter; one may send 1 bit/s, so it is always over
    fleet.edge("tight", [lb], address="tight.example:1935",
               config={"edge": {"bandwidth_interface": "lo", "bandwidth_limit_mbps": 1e-6}})
    fleet.edge("roomy", [lb], address="roomy.example:1935",
               config={"edge": {"bandwidth_interface": "lo", "bandwidth_limit_mbps": 1e6}})
    await listed(fleet, lb, 2)

    async def measured() -> bool:  # a second report: a rate over the time between two
        servers = await fleet.servers(lb)
        return all(row.get("bandwidth") for row in servers.values())
    await wait_until(measured, what="both edges report a bandwidth")
    servers = await fleet.servers(lb)
    tight = servers["tight.example:1935"]
    assert float(tight["bandwidth"]) > 1 and tight["available"] == "false"
    assert servers["roomy.example:1935"]["available"] == "true"
    for _ in range(5):
        assert await curl(f"{lb.url}/loadbalancer", "127.0.0.1") == (
            "redirect=roomy.example:1935")


async def test_an_nginx_rtmp_edge_reports_the_bandwidth_its_stat_page_says(fleet, edges,
                                                                          background):
    from tests.e2e.test_rtmp import HAVE, nginx_edge, publish
    if not HAVE:
        pytest.skip("needs ffmpeg and nginx-rtmp")
    lb = fleet.balancer()
    server = edges("bw")
    nginx_edge(fleet, lb, "bw", server)
    await listed(fleet, lb, 1)
    publish(background, server.rtmp_url("live/s"))  # nginx-rtmp counts bw_out from it on
    background("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
               "-i", server.rtmp_url("live/s"), "-f", "null", "-")

    async def sending() -> bool:
        [row] = (await fleet.servers(lb)).values()
        return float(row.get("bandwidth") or 0) > 0
    await wait_until(sending, what="the edge reports nginx-rtmp's bw_out")
