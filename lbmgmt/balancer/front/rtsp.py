"""What each RTSP request on the client port gets, from the core: no I/O.

Shaped for the clients that exist (docs/protocols.md):
- ``OPTIONS`` gets 200 with ``Public``: GStreamer's rtspsrc sends its DESCRIBE
  on the same connection after a 302 to OPTIONS, so the redirect waits for it;
- ``DESCRIBE`` (play), ``ANNOUNCE`` (publish) and ``SETUP`` get ``302`` with
  an absolute ``Location: rtsp://<edge>[:<port>]/<path>?<query>`` and the
  connection closes after it (ffmpeg and live555 reconnect to the Location);
- session methods (PLAY, RECORD, PAUSE, TEARDOWN, GET/SET_PARAMETER) get 455:
  there is no session here; anything else 501.
The path and query go to the edge as sent, byte for byte, unless ``[rtsp.apps]``
are configured: then the first path segment must name one (404 otherwise) and is
rewritten to its ``redirect_app_name``. The edge's port: ``redirect_port``, else
the port in the edge's address, else the port the client reached the balancer on.
"""

from __future__ import annotations

from collections import Counter

from urllib.parse import unquote

from lbmgmt.streams import named
from lbmgmt.balancer.core import NO_SERVER, BalancerCore
from lbmgmt.balancer.rtsp_config import RtspConfig
from lbmgmt.endpoints import split_address, url_authority
from lbmgmt.rtsp.connection import RtspRequest, RtspResponse

REDIRECTED = ("DESCRIBE", "ANNOUNCE", "SETUP")
PUBLIC = ("Public", "OPTIONS, DESCRIBE, ANNOUNCE, SETUP")
SESSION_METHODS = frozenset(("PLAY", "RECORD", "PAUSE", "TEARDOWN", "GET_PARAMETER",
                             "SET_PARAMETER"))
TEXT = ("Content-Type", "text/plain; charset=utf-8")
COUNTERS = ("connections", "requests", "redirected", "no_server", "not_found", "not_valid",
            "not_implemented", "bad_requests", "too_large", "timeouts")


def split_rtsp_url(url: bytes) -> tuple[bytes, bytes | None] | None:
    """(path, query) of ``rtsp://host[:port]/path?query`` or ``/path?query``; None for
    ``*`` or a URL of another scheme."""
    lowered = url[:8].lower()
    if lowered.startswith((b"rtsp://", b"rtsps://")):
        start = url.index(b"//") + 2
        ends = [i for i in (url.find(b"/", start), url.find(b"?", start)) if i >= 0]
        rest = url[min(ends):] if ends else b""
        url = rest if rest.startswith(b"/") else b"/" + rest
    elif not url.startswith(b"/"):
        return None
    path, question, query = url.partition(b"?")
    path = path.partition(b"#")[0]
    return path, (query.partition(b"#")[0] if question else None)


class RtspAnswers:
    def __init__(self, core: BalancerCore, config: RtspConfig, counters: Counter[str]) -> None:
        self.core = core
        self.config = config
        self.counters = counters

    def answer(self, request: RtspRequest, *, now: float, client_port: int | None,
               client: str | None = None) -> RtspResponse:
        """``now`` is the core's monotonic clock; ``client_port`` the port the client
        reached (the edge's port when neither the config nor its address gives one)."""
        self.counters["requests"] += 1
        method = request.method
        if method == "OPTIONS":
            return RtspResponse(200, (PUBLIC,))
        if method in SESSION_METHODS:
            self.counters["not_valid"] += 1
            return RtspResponse(455, (PUBLIC, TEXT),
                                b"455: no session here: DESCRIBE or ANNOUNCE first\n")
        if method not in REDIRECTED:
            self.counters["not_implemented"] += 1
            return RtspResponse(501, (PUBLIC, TEXT), b"501: Not Implemented\n")
        parts = split_rtsp_url(request.url)
        path = None if parts is None else self._rewrite(parts[0])
        if parts is None or path is None:
            self.counters["not_found"] += 1
            return RtspResponse(404, (TEXT,), b"404: no such application on this balancer\n")
        core = self.core
        stream = None
        if core.wants_streams:  # the path on the edge (SETUP's ends with its track)
            stream = named(unquote(path.decode("latin-1"), errors="surrogateescape"))
            if stream is not None and method == "SETUP":
                stream = named(stream.rpartition("/")[0]) if "/" in stream else stream
        entry = core.redirect("rtsp", now, client, stream)
        if entry is None:
            self.counters["no_server"] += 1
            return RtspResponse(503, (TEXT,), f"503: {NO_SERVER}\n".encode())
        host, port = split_address(self.core.address_for(entry, client))
        port = self.config.redirect_port or port or client_port
        # llhttp takes no control bytes in a URL: latin-1 carries it unchanged
        location = (f"{self.config.redirect_scheme}://{url_authority(host, port)}"
                    + path.decode("latin-1"))
        if parts[1]:
            location += "?" + parts[1].decode("latin-1")
        self.counters["redirected"] += 1
        return RtspResponse(302, (("Location", location),), close=True)

    def _rewrite(self, path: bytes) -> bytes | None:
        apps = self.config.apps
        if not apps:
            return path
        name, slash, rest = path[1:].partition(b"/")
        app = apps.get(name.decode("latin-1"))
        if app is None:
            return None
        return b"/" + app.redirect_app_name.encode() + slash + rest
