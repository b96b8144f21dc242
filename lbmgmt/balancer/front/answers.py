"""What each HTTP request on the client port gets, from the core: no I/O.

``/loadbalancer`` → ``redirect=<address>`` (503 ``error=no available server``;
``?stream=app/name`` names the client's stream for stream affinity, as do
``/redirect/<app>/<stream>/…`` and the WHIP/WHEP path),
``/redirect/<path>`` → 302 to ``<scheme>://<edge>[:<port>]/<path>?<query>``
with path and query byte for byte as sent, ``/crossdomain.xml``, and
``/loadbalancer?serverInfoXML``, which is ``ServerInfoWanted``: the document is
built in slices by the glue (``lbmgmt.balancer.serverinfo``) and answered with
``server_info``. Those take GET and HEAD (405 with ``Allow`` otherwise).

WHIP and WHEP: ``POST /whip/<path>`` and ``POST /whep/<path>`` → 307 (the
method and the offer are sent again to the Location, RFC 9725 §4.5) to the
edge's resource (``[webrtc] whip_path``/``whep_path``), with the CORS headers
a browser's ``fetch()`` needs to see the Location; ``OPTIONS`` there is the
preflight. RTMPT's POSTs (``/open/``, ``/send/``, ``/idle/``, ``/close/``,
``/fcs/ident2``) go to ``lbmgmt.balancer.front.rtmpt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import unquote

from lbmgmt.balancer.config import HttpConfig, WebRtcConfig
from lbmgmt.balancer.core import NO_SERVER, BalancerCore
from lbmgmt.balancer.front.http import Request, Response
from lbmgmt.balancer.front.rtmpt import RtmptSessions, is_rtmpt
from lbmgmt.endpoints import split_address, url_authority
from lbmgmt.streams import from_media_path, named

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
FOUND = (SERVER, TEXT, NO_CACHE, ANY_ORIGIN)  # (hls.js on another origin follows it)
POLICY = (SERVER, ("Content-Type", "text/xml"))
STATUS = (SERVER, XML, NO_CACHE)
JSON_STATUS = (SERVER, ("Content-Type", "application/json"), NO_CACHE, ANY_ORIGIN)
# WHIP/WHEP: a browser's fetch() reads the 307's Location only if it is exposed; the
# preflight allows the POST with its bearer token and SDP body from any origin.
CORS = (ANY_ORIGIN, ("Access-Control-Expose-Headers", "Location"))
PREFLIGHT = (SERVER, *CORS, ("Access-Control-Allow-Methods", "POST, OPTIONS"),
             ("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match"),
             ("Access-Control-Max-Age", "86400"), ("Allow", "POST, OPTIONS"))
WEBRTC_REFUSED = (SERVER, TEXT, *CORS)
WEBRTC_NOT_ALLOWED = (*WEBRTC_REFUSED, ("Allow", "POST, OPTIONS"))


@dataclass(frozen=True, slots=True)
class ServerInfoWanted:
    """Answer with ``Answers.server_info(document, json)`` once the document is made."""

    json: bool = False  # ?serverInfoJSON, else ?serverInfoXML


SERVER_INFO_XML = ServerInfoWanted(json=False)
SERVER_INFO_JSON = ServerInfoWanted(json=True)


def http_date(wall: float) -> bytes:
    """The Date header's value for the wall clock ``wall`` (seconds)."""
    return formatdate(int(wall), usegmt=True).encode("ascii")


WEBRTC_KINDS = {b"/whip/": "whip", b"/whep/": "whep"}
WEBRTC_COUNTERS = ("whip", "whep", "preflights", "no_server", "not_found", "not_allowed")


class Answers:
    def __init__(self, core: BalancerCore, config: HttpConfig,
                 webrtc: WebRtcConfig | None = None, rtmpt: RtmptSessions | None = None
                 ) -> None:
        self.core = core
        self.config = config
        self.webrtc = webrtc or WebRtcConfig()
        self.rtmpt = rtmpt
        self.webrtc_counters = core.front("webrtc", WEBRTC_COUNTERS)

    def answer(self, request: Request, *, now: float, local_port: int | None = None,
               address: str = "?") -> Response | ServerInfoWanted:
        """``now`` is the core's monotonic clock; ``local_port`` the port the client
        reached (an edge's port by default where neither config nor address has one);
        ``address`` the client's (RTMPT's sessions are counted per address)."""
        path = request.path
        client: str | None = address
        if self.core.routing.active:  # (through a trusted proxy: the client it names)
            client = self.core.routing.client(address, request.headers)
        if request.method != "GET" and request.method != "HEAD":
            kind = WEBRTC_KINDS.get(path[:6])
            if kind is not None and self.webrtc.enabled:
                return self._webrtc(kind, request, now, local_port, client)
            if self.rtmpt is not None and is_rtmpt(path):
                return self.rtmpt.answer(request, now=now, local_port=local_port,
                                         address=address)
            return Response(405, b"405: Method Not Allowed", NOT_ALLOWED)
        if path == b"/loadbalancer":
            query = request.query
            if query is not None and b"serverInfo" in query:
                wants_json = _has_key(query, b"serverInfoJSON")
                if wants_json or _has_key(query, b"serverInfoXML"):
                    if not self.config.enable_server_info_xml:
                        return Response(404, b"error=server info is disabled\n", PLAIN)
                    return SERVER_INFO_JSON if wants_json else SERVER_INFO_XML
            core = self.core
            stream = (_stream_in(query) if query is not None and core.wants_streams
                      else None)
            entry = core.redirect("http", now, client, stream)
            if entry is None:
                return Response(503, NO_SERVER_BODY, REDIRECT)
            return Response(200, b"redirect=" + core.address_for(entry, client).encode("utf-8"),
                            REDIRECT)
        if path.startswith(b"/redirect/"):
            return self._found(request, now, client)
        if path == b"/crossdomain.xml":
            return Response(200, CROSSDOMAIN, POLICY)
        return Response(404, b"404: Not Found", PLAIN)

    def _webrtc(self, kind: str, request: Request, now: float, local_port: int | None,
                client: str | None) -> Response:
        """307 to the edge's WHIP or WHEP resource; the preflight for OPTIONS."""
        counters = self.webrtc_counters
        if request.method == "OPTIONS":
            counters["preflights"] += 1
            return Response(200, b"", PREFLIGHT)
        if request.method != "POST":
            counters["not_allowed"] += 1
            return Response(405, b"405: Method Not Allowed", WEBRTC_NOT_ALLOWED)
        name = request.path[6:]
        if not name:
            counters["not_found"] += 1
            return Response(404, b"404: no stream named (POST /%s/<stream>)" % kind.encode(),
                            WEBRTC_REFUSED)
        core = self.core
        stream = named(_unquoted(name)) if core.wants_streams else None
        entry = core.redirect(kind, now, client, stream)
        if entry is None:
            counters["no_server"] += 1
            return Response(503, NO_SERVER_BODY, WEBRTC_REFUSED)
        counters[kind] += 1
        config = self.webrtc
        host, port = split_address(self.core.address_for(entry, client))
        port = config.redirect_port or port or local_port
        template = config.whip_path if kind == "whip" else config.whep_path
        # the name as sent, still percent-encoded (latin-1: llhttp took no control bytes)
        location = (f"{config.redirect_scheme}://{url_authority(host, port)}"
                    + template.replace("{path}", name.decode("latin-1")))
        if request.query:
            location += "?" + request.query.decode("latin-1")
        return Response(307, b"", (SERVER, NO_CACHE, *CORS, ("Location", location)))

    def server_info(self, document: bytes, json: bool = False) -> Response:
        return Response(200, document, JSON_STATUS if json else STATUS)

    def _found(self, request: Request, now: float, client: str | None) -> Response:
        """302 to the chosen edge, keeping path and query byte for byte (still encoded)."""
        core = self.core
        stream = (from_media_path(_unquoted(request.path[10:])) if core.wants_streams
                  else None)
        entry = core.redirect("http", now, client, stream)
        if entry is None:
            return Response(503, NO_SERVER_BODY, FOUND)
        host, port = split_address(self.core.address_for(entry, client))
        if self.config.redirect_port is not None:
            port = self.config.redirect_port
        # llhttp refuses control bytes in a target, so latin-1 carries it unchanged
        location = (f"{self.config.redirect_scheme}://{url_authority(host, port)}"
                    + request.path[len(b"/redirect"):].decode("latin-1"))
        if request.query:
            location += "?" + request.query.decode("latin-1")
        return Response(302, b"302: Found", (*FOUND, ("Location", location)))


def _unquoted(raw: bytes) -> str:
    """Percent-decoded text of a path or query part (UTF-8; a byte that is not stays
    escaped, so a stream name compares as the edge would name it or not at all)."""
    return unquote(raw.decode("latin-1"), errors="surrogateescape")


def _stream_in(query: bytes) -> str | None:
    """The ``stream=`` parameter's name (``app/stream``), if the query has one."""
    if b"stream=" not in query:
        return None
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        if key == b"stream":
            return named(_unquoted(value))
    return None


def _has_key(query: bytes, key: bytes) -> bool:
    return any(part.partition(b"=")[0] == key for part in query.split(b"&"))
