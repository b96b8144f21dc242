"""The balancer's HTTP face (aiohttp): redirect answers and the status document.

Kept as a plain ``web.Application`` factory so the RTMP listener can share
port 1935 by handing HTTP connections to this same application. Depends on the
core and the ``[http]`` settings only.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from lbmgmt.balancer.config import HttpConfig
from lbmgmt.balancer.core import NO_SERVER, BalancerCore
from lbmgmt.balancer.serverinfo import render_server_info
from lbmgmt.clocks import Clocks
from lbmgmt.endpoints import join_host_port, split_address

CROSSDOMAIN = b"""<?xml version="1.0"?>
<!DOCTYPE cross-domain-policy SYSTEM "http://www.adobe.com/xml/dtds/cross-domain-policy.dtd">
<cross-domain-policy>
  <allow-access-from domain="*"/>
</cross-domain-policy>
"""
NO_CACHE = {"Cache-Control": "no-store"}
NO_SERVER_BODY = f"error={NO_SERVER}"


@dataclass(frozen=True, slots=True)
class HttpFront:
    core: BalancerCore
    config: HttpConfig
    clocks: Clocks


FRONT_KEY = web.AppKey("front", HttpFront)


def make_http_app(core: BalancerCore, config: HttpConfig, clocks: Clocks) -> web.Application:
    app = web.Application()
    app[FRONT_KEY] = HttpFront(core, config, clocks)
    app.router.add_get("/loadbalancer", _loadbalancer)
    app.router.add_get("/crossdomain.xml", _crossdomain)
    app.router.add_get(r"/redirect/{path:[\s\S]*}", _found)  # any byte, CR/LF too
    return app


async def _loadbalancer(request: web.Request) -> web.Response:
    front = request.app[FRONT_KEY]
    now = front.clocks.monotonic()
    if "serverInfoXML" in request.query:
        if not front.config.enable_server_info_xml:
            raise web.HTTPNotFound(text="error=serverInfoXML is disabled\n")
        return web.Response(body=render_server_info(front.core.status(now)),
                            content_type="text/xml", charset="utf-8", headers=NO_CACHE)
    entry = front.core.redirect("http", now)
    # Browser players on other origins ask with fetch(); the answer is public anyway.
    headers = {**NO_CACHE, "Access-Control-Allow-Origin": "*"}
    if entry is None:
        return web.Response(status=503, text=NO_SERVER_BODY, headers=headers)
    return web.Response(text=f"redirect={entry.address}", headers=headers)


async def _crossdomain(request: web.Request) -> web.Response:
    return web.Response(body=CROSSDOMAIN, content_type="text/xml")


async def _found(request: web.Request) -> web.Response:
    """``/redirect/<path>``: 302 to the chosen edge, keeping path and query byte for byte.

    The raw (still percent-encoded) path is used, so nothing the client sent
    is decoded into the Location header.
    """
    front = request.app[FRONT_KEY]
    entry = front.core.redirect("http", front.clocks.monotonic())
    if entry is None:
        return web.Response(status=503, text=NO_SERVER_BODY, headers=NO_CACHE)
    http = front.config
    host, port = split_address(entry.address)
    if http.redirect_port is not None:
        port = http.redirect_port
    raw_path = request.rel_url.raw_path[len("/redirect"):]
    query = request.rel_url.raw_query_string
    location = f"{http.redirect_scheme}://{join_host_port(host, port)}{raw_path}"
    if query:
        location += f"?{query}"
    raise web.HTTPFound(location, headers=NO_CACHE)
