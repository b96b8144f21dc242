"""The balancer's HTTP face (aiohttp): redirect answers and the status document.

Kept as a plain ``web.Application`` factory so the RTMP listener can share
port 1935 by handing HTTP connections to this same application.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from lbmgmt.endpoints import join_host_port, split_address

if TYPE_CHECKING:
    from lbmgmt.balancer.daemon import BalancerDaemon

CROSSDOMAIN = b"""<?xml version="1.0"?>
<!DOCTYPE cross-domain-policy SYSTEM "http://www.adobe.com/xml/dtds/cross-domain-policy.dtd">
<cross-domain-policy>
  <allow-access-from domain="*"/>
</cross-domain-policy>
"""
NO_CACHE = {"Cache-Control": "no-store"}
BALANCER_KEY = web.AppKey("balancer", object)
NO_SERVER = "error=no available server"


def make_http_app(balancer: BalancerDaemon) -> web.Application:
    app = web.Application()
    app[BALANCER_KEY] = balancer
    app.router.add_get("/loadbalancer", _loadbalancer)
    app.router.add_get("/crossdomain.xml", _crossdomain)
    app.router.add_get(r"/redirect/{path:[\s\S]*}", _redirect)  # any byte, CR/LF too
    return app


def _balancer(request: web.Request) -> BalancerDaemon:
    return request.app[BALANCER_KEY]  # type: ignore[return-value]


async def _loadbalancer(request: web.Request) -> web.Response:
    balancer = _balancer(request)
    if "serverInfoXML" in request.query:
        if not balancer.config.http.enable_server_info_xml:
            raise web.HTTPNotFound(text="error=serverInfoXML is disabled\n")
        return web.Response(body=balancer.server_info_xml(), content_type="text/xml",
                            charset="utf-8", headers=NO_CACHE)
    entry = balancer.redirect("http")
    # Browser players on other origins ask with fetch(); the answer is public anyway.
    headers = {**NO_CACHE, "Access-Control-Allow-Origin": "*"}
    if entry is None:
        return web.Response(status=503, text=NO_SERVER, headers=headers)
    return web.Response(text=f"redirect={entry.address}", headers=headers)


async def _crossdomain(request: web.Request) -> web.Response:
    return web.Response(body=CROSSDOMAIN, content_type="text/xml")


async def _redirect(request: web.Request) -> web.Response:
    """302 to the chosen edge, keeping path and query byte for byte.

    The raw (still percent-encoded) path is used, so nothing the client sent
    is decoded into the Location header.
    """
    balancer = _balancer(request)
    entry = balancer.redirect("http")
    if entry is None:
        return web.Response(status=503, text=NO_SERVER, headers=NO_CACHE)
    http = balancer.config.http
    host, port = split_address(entry.address)
    if http.redirect_port is not None:
        port = http.redirect_port
    raw_path = request.rel_url.raw_path[len("/redirect"):]
    query = request.rel_url.raw_query_string
    location = f"{http.redirect_scheme}://{join_host_port(host, port)}{raw_path}"
    if query:
        location += f"?{query}"
    raise web.HTTPFound(location, headers=NO_CACHE)
