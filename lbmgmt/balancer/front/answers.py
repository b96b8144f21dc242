"""What each HTTP request on the client port gets, from the core: no I/O.

``/loadbalancer`` → ``redirect=<address>`` (503 ``error=no available server``),
``/redirect/<path>`` → 302 to ``<scheme>://<edge>[:<port>]/<path>?<query>``
with path and query byte for byte as sent, ``/crossdomain.xml``, and
``/loadbalancer?serverInfoXML``, which is ``ServerInfoWanted``: the document is
built in slices by the glue (``lbmgmt.balancer.serverinfo``) and answered with
``server_info``. Only GET and HEAD are served (405 with ``Allow`` otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate

from lbmgmt.balancer.config import HttpConfig
from lbmgmt.balancer.core import NO_SERVER, BalancerCore
from lbmgmt.balancer.front.http import Request, Response
from lbmgmt.endpoints import join_host_port, split_address

CROSSDOMAIN = b"""<?xml version="1.0"?>
<!DOCTYPE cross-domain-policy SYSTEM "http://www.adobe.com/xml/dtds/cross-domain-policy.dtd">
<cross-domain-policy>
  <allow-access-from domain="*"/>
</cross-domain-policy>
"""
TEXT = ("Content-Type", "text/plain; charset=utf-8")
XML = ("Content-Type", "text/xml; charset=utf-8")
NO_CACHE = ("Cache-Control", "no-store")
ANY_ORIGIN = ("Access-Control-Allow-Origin", "*")  # players on other origins fetch() it
SERVER = ("Server", "lbmgmt")
NO_SERVER_BODY = f"error={NO_SERVER}".encode()
# Header sets, each one tuple object (HttpConnection caches their encoded blocks);
# Date, Content-Length and Connection are added on writing.
REDIRECT = (SERVER, TEXT, NO_CACHE, ANY_ORIGIN)
PLAIN = (SERVER, TEXT)
NOT_ALLOWED = (SERVER, TEXT, ("Allow", "GET, HEAD"))
FOUND = (SERVER, TEXT, NO_CACHE)
POLICY = (SERVER, ("Content-Type", "text/xml"))
STATUS = (SERVER, XML, NO_CACHE)


@dataclass(frozen=True, slots=True)
class ServerInfoWanted:
    """Answer with ``Answers.server_info(document)`` once the document is made."""


def http_date(wall: float) -> bytes:
    """The Date header's value for the wall clock ``wall`` (seconds)."""
    return formatdate(int(wall), usegmt=True).encode("ascii")


class Answers:
    def __init__(self, core: BalancerCore, config: HttpConfig) -> None:
        self.core = core
        self.config = config

    def answer(self, request: Request, *, now: float) -> Response | ServerInfoWanted:
        """``now`` is the core's monotonic clock."""
        if request.method != "GET" and request.method != "HEAD":
            return Response(405, b"405: Method Not Allowed", NOT_ALLOWED)
        path = request.path
        if path == b"/loadbalancer":
            if request.query is not None and _has_key(request.query, b"serverInfoXML"):
                if not self.config.enable_server_info_xml:
                    return Response(404, b"error=serverInfoXML is disabled\n", PLAIN)
                return ServerInfoWanted()
            entry = self.core.redirect("http", now)
            if entry is None:
                return Response(503, NO_SERVER_BODY, REDIRECT)
            return Response(200, b"redirect=" + entry.address.encode("utf-8"), REDIRECT)
        if path.startswith(b"/redirect/"):
            return self._found(request, now)
        if path == b"/crossdomain.xml":
            return Response(200, CROSSDOMAIN, POLICY)
        return Response(404, b"404: Not Found", PLAIN)

    def server_info(self, document: bytes) -> Response:
        return Response(200, document, STATUS)

    def _found(self, request: Request, now: float) -> Response:
        """302 to the chosen edge, keeping path and query byte for byte (still encoded)."""
        entry = self.core.redirect("http", now)
        if entry is None:
            return Response(503, NO_SERVER_BODY, FOUND)
        host, port = split_address(entry.address)
        if self.config.redirect_port is not None:
            port = self.config.redirect_port
        # llhttp refuses control bytes in a target, so latin-1 carries it unchanged
        location = (f"{self.config.redirect_scheme}://{join_host_port(host, port)}"
                    + request.path[len(b"/redirect"):].decode("latin-1"))
        if request.query:
            location += "?" + request.query.decode("latin-1")
        return Response(302, b"302: Found", (*FOUND, ("Location", location)))


def _has_key(query: bytes, key: bytes) -> bool:
    return any(part.partition(b"=")[0] == key for part in query.split(b"&"))
