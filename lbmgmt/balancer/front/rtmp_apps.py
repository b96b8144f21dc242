"""The balancer's RTMP applications, sans-IO: what a ``connect``, ``play`` or
``publish`` gets, on one ``lbmgmt.rtmp.server.ServerConnection``.

Shared by RTMP on its own socket (``lbmgmt.balancer.rtmp``) and RTMPT
(``lbmgmt.balancer.front.rtmpt``); the edge URL's scheme and port follow
``edge_url``'s rule.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from urllib.parse import urlsplit

from lbmgmt.balancer.core import NO_SERVER, BalancerCore
from lbmgmt.balancer.registry import ServerEntry
from lbmgmt.balancer.rtmp_config import RtmpApp, RtmpConfig
from lbmgmt.endpoints import split_address, url_authority
from lbmgmt.streams import named
from lbmgmt.rtmp.commands import Command, status
from lbmgmt.rtmp.server import ServerConnection


def _split_app(app: str) -> tuple[str, str, str]:
    """'redirect/inst?token=1' → ('redirect', '/inst', 'token=1')."""
    path, _, query = app.partition("?")
    name, slash, rest = path.partition("/")
    return name, slash + rest, query


TUNNELLED = ("rtmpt", "rtmpts")  # RTMP in HTTP: on the HTTP ports the client can reach


def edge_url(app: RtmpApp, address: str, *, client_scheme: str | None,
             client_port: int | None, instance: str = "", query: str = "") -> str:
    """The edge URL.

    Scheme: the app's ``redirect_scheme``, else the client's (``rtmpt`` stays
    ``rtmpt``). Port: the app's ``redirect_port``; else, for a tunnelled scheme
    (``rtmpt``, ``rtmpts``), the port the client came through (port rollover: a
    client that reached the balancer on 80 gets the edge on 80, never the RTMP
    port in the edge's address); else the port in the edge's address; else the
    client's.
    """
    host, address_port = split_address(address)
    scheme = app.redirect_scheme or client_scheme or "rtmp"
    port = (app.redirect_port or (client_port if scheme in TUNNELLED else None)
            or address_port or client_port)
    url = f"{scheme}://{url_authority(host, port)}/{app.redirect_app_name}{instance}"
    return f"{url}?{query}" if query else url


class RtmpCommands:
    """What the balancer's RTMP applications answer, sans-IO, on one ``ServerConnection``.

    ``connect`` to a redirect application is rejected with the edge's URL in
    ``ex.redirect`` (or accepted, with ``redirect_on_connect = false``, and the
    redirect given to ``play``/``publish``); a proxy application is handed back
    to the caller (``handle`` returns it). Shared by RTMP on its socket and RTMPT.
    """

    def __init__(self, core: BalancerCore, config: RtmpConfig, counters: Counter[str],
                 conn: ServerConnection, *, local_port: int | None, protocol: str = "rtmp",
                 proxy: bool = True, client: str | None = None) -> None:
        self.core = core
        self.config = config
        self.counters = counters
        self.conn = conn
        self.local_port = local_port  # the port the client reached: its port by default
        self.client = client  # its address (routing: groups, private addresses)
        self.protocol = protocol  # what the core counts the redirects under
        self.proxy = proxy  # proxy applications can be served (not over RTMPT)
        self.connect: Command | None = None
        self.accepted: RtmpApp | None = None
        self._now = 0.0

    def handle(self, command: Command, now: float) -> RtmpApp | None:
        """Answer ``command`` (``now``: the core's clock); a proxy application to relay,
        or None."""
        self._now = now
        if command.name == "connect":
            return self._on_connect(command)
        if command.name == "createStream" and self.accepted is not None:
            self.conn.send_command("_result", command.transaction_id, None, 1.0)
        elif command.name in ("play", "publish") and self.accepted is not None:
            stream = command.args[0] if command.args and isinstance(command.args[0], str) else ""
            self._redirect_stream(command, stream)
        return None

    def client_scheme_port(self) -> tuple[str | None, int | None]:
        """The scheme and port the client used, from its tcUrl, else the port it reached."""
        tc_url = self.connect.command_object.get("tcUrl") if self.connect else None
        scheme = port = None
        if isinstance(tc_url, str):
            with contextlib.suppress(ValueError):
                parts = urlsplit(tc_url)
                scheme, port = parts.scheme.lower() or None, parts.port
        return scheme, port or self.local_port

    def _edge(self, stream: str | None = None) -> ServerEntry | None:
        entry = self.core.redirect(self.protocol, self._now, self.client, stream)
        if entry is None:
            self.counters["no_server"] += 1
        return entry

    def _on_connect(self, command: Command) -> RtmpApp | None:
        self.connect = command
        counters = self.counters
        obj = command.command_object if isinstance(command.command_object, dict) else {}
        app_field = obj.get("app")
        name, instance, query = _split_app(app_field if isinstance(app_field, str) else "")
        app = self.config.apps.get(name)
        if app is None or (app.mode == "proxy" and not self.proxy):
            counters["invalid_app"] += 1
            why = ("does not exist on this balancer" if app is None
                   else "relays RTMP only, not RTMPT")
            self.conn.reject_connect(command.transaction_id, status(
                "error", "NetConnection.Connect.InvalidApp",
                f"Connection rejected: application '{name}' {why}"))
            return None
        if app.mode == "proxy":
            return app
        if not app.redirect_on_connect:
            self.accepted = app
            self.conn.accept_connect(command.transaction_id, status(
                "status", "NetConnection.Connect.Success", "Connection succeeded.",
                objectEncoding=0.0))
            return None
        entry = self._edge()
        if entry is None:
            self.conn.reject_connect(command.transaction_id, status(
                "error", "NetConnection.Connect.Rejected",
                f"Connection rejected: {NO_SERVER}"))
            return None
        scheme, port = self.client_scheme_port()
        url = edge_url(app, self.core.address_for(entry, self.client), client_scheme=scheme,
                       client_port=port,
                       instance=instance, query=query)
        counters["redirected"] += 1
        self.conn.reject_connect(command.transaction_id, status(
            "error", "NetConnection.Connect.Rejected", f"Connection rejected: redirect to {url}",
            ex={"code": 302.0, "redirect": url}))
        return None

    def _redirect_stream(self, command: Command, stream: str) -> None:
        app = self.accepted
        assert app is not None
        code = "NetStream.Play.Failed" if command.name == "play" else "NetStream.Publish.BadName"
        # the stream as the edge names it: its application (rewritten) and the name
        name = (named(f"{app.redirect_app_name}/{stream}")
                if stream and self.core.wants_streams else None)
        entry = self._edge(name)
        if entry is None:
            info = status("error", code, f"Rejected: {NO_SERVER}")
        else:
            scheme, port = self.client_scheme_port()
            url = edge_url(app, self.core.address_for(entry, self.client),
                           client_scheme=scheme, client_port=port)
            url = f"{url}/{stream}" if stream else url
            self.counters["redirected"] += 1
            info = status("error", code, f"Rejected: redirect to {url}",
                          ex={"code": 302.0, "redirect": url})
        self.conn.send_command("onStatus", 0.0, None, info, stream_id=command.stream_id or 1)
        self.conn.close()
