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
NO_SERVER_BODY = f"error={NO_SERVER}".encode()
SERVER = ("Server", "lbmgmt")


@dataclass(frozen=True, slots=True)
class ServerInfoWanted:
    """Answer with ``Answers.server_info(document)`` once the document is made."""


class _Date:
    """The Date header's value, made at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def at(self, wall: float) -> str:
        second = int(wall)
        if second != self._second:
            self._second, self._value = second, formatdate(second, usegmt=True)
        return self._value


class Answers:
    def __init__(self, core: BalancerCore, config: HttpConfig) -> None:
        self.core = core
        self.config = config
        self._date = _Date()

    def answer(self, request: Request, *, now: float,
               wall: float) -> Response | ServerInfoWanted:
        """``now`` is the core's monotonic clock, ``wall`` the Date header's."""
        common = (("Date", self._date.at(wall)), SERVER)
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"405: Method Not Allowed", (*common, TEXT,
                                                              ("Allow", "GET, HEAD")))
        path = request.path
        if path == b"/loadbalancer":
            if request.query is not None and _has_key(request.query, b"serverInfoXML"):
                if not self.config.enable_server_info_xml:
                    return Response(404, b"error=serverInfoXML is disabled\n", (*common, TEXT))
                return ServerInfoWanted()
            entry = self.core.redirect("http", now)
            if entry is None:
                return Response(503, NO_SERVER_BODY, (*common, TEXT, NO_CACHE, ANY_ORIGIN))
            return Response(200, b"redirect=" + entry.address.encode("utf-8"),
                            (*common, TEXT, NO_CACHE, ANY_ORIGIN))
        if path.startswith(b"/redirect/"):
            return self._found(request, now, common)
        if path == b"/crossdomain.xml":
            return Response(200, CROSSDOMAIN, (*common, ("Content-Type", "text/xml")))
        return Response(404, b"404: Not Found", (*common, TEXT))

    def server_info(self, document: bytes, *, wall: float) -> Response:
        return Response(200, document, (("Date", self._date.at(wall)), SERVER, XML, NO_CACHE))

    def _found(self, request: Request, now: float,
               common: tuple[tuple[str, str], ...]) -> Response:
        """302 to the chosen edge, keeping path and query byte for byte (still encoded)."""
        entry = self.core.redirect("http", now)
        if entry is None:
            return Response(503, NO_SERVER_BODY, (*common, TEXT, NO_CACHE))
        host, port = split_address(entry.address)
        if self.config.redirect_port is not None:
            port = self.config.redirect_port
        # llhttp refuses control bytes in a target, so latin-1 carries it unchanged
        location = (f"{self.config.redirect_scheme}://{join_host_port(host, port)}"
                    + request.path[len(b"/redirect"):].decode("latin-1"))
        if request.query:
            location += "?" + request.query.decode("latin-1")
        return Response(302, b"302: Found", (*common, TEXT, NO_CACHE, ("Location", location)))


def _has_key(query: bytes, key: bytes) -> bool:
    return any(part.partition(b"=")[0] == key for part in query.split(b"&"))
