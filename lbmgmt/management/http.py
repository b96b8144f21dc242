"""The management port (aiohttp): POST /jsonrpc and GET /metrics, behind auth."""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lbmgmt import __version__
from lbmgmt.endpoints import format_address
from lbmgmt.httpserve import close_runner, serve_app, stop_listening
from lbmgmt.logs import fields
from lbmgmt.management.api import METHODS, CallContext, NotificationPulse
from lbmgmt.management.auth import Credentials, LoginLimiter, User
from lbmgmt.management.config import ManagementConfig
from lbmgmt.management.jsonrpc import JsonRpcDispatcher
from lbmgmt.management.mbean import MBean, attribute
from lbmgmt.management.metrics import Metrics
from lbmgmt.management.server import MBeanServer, Role
from lbmgmt.throttle import Throttle

log = logging.getLogger("lbmgmt.management")

METRICS_HEADERS = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
WRITE_SLICE = 256 * 1024  # bytes of a big /metrics answer written per loop turn

MAX_REQUEST = 256 * 1024
CALLER = web.RequestKey("caller", tuple[Role, str | None])
CHALLENGE = 'Basic realm="lbmgmt", charset="UTF-8", Bearer realm="lbmgmt"'


class ManagementMBean(MBean):
    """The management port itself: who may use it and how often logins fail."""

    def __init__(self, port: ManagementServer) -> None:
        self.port = port

    @attribute("string", "lbmgmt version", metric=None)
    def Version(self) -> str:
        return __version__

    @attribute("string", "Address the management port is bound to", metric=None)
    def ListenAddress(self) -> str:
        return self.port.address_text

    @attribute("boolean", "Whether callers must log in")
    def AuthRequired(self) -> bool:
        return self.port.credentials is not None

    @attribute("boolean", "Whether the port speaks HTTPS")
    def TlsEnabled(self) -> bool:
        return self.port.ssl_context is not None

    @attribute("integer", "Failed logins since start", metric="counter")
    def FailedLogins(self) -> int:
        return self.port.limiter.failed_total

    @attribute("integer", "Requests refused while their client was locked out", metric="counter")
    def RefusedLogins(self) -> int:
        return self.port.limiter.refused_total

    @attribute("object", "Requests refused before any login, by why: host (a name that is "
               "not this port's: DNS rebinding), origin (a page elsewhere), content_type "
               "(not application/json: a form or a no-preflight fetch)", metric="counter",
               metric_label="reason")
    def RefusedRequests(self) -> dict[str, int]:
        return dict(self.port.refused)

    @attribute("integer", "Long polls (pollNotifications) waiting for a notification now")
    def ParkedPolls(self) -> int:
        return self.port.parked_polls


def _tls_context(config: ManagementConfig) -> ssl.SSLContext | None:
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return context


class ManagementServer:
    def __init__(self, config: ManagementConfig, server: MBeanServer, *, daemon: str,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.server = server
        self.metrics = Metrics(server)
        self.daemon = daemon
        self.credentials: Credentials | None = config.credentials
        self.limiter = LoginLimiter()
        self.monotonic = monotonic
        self.ssl_context = _tls_context(config)
        self.dispatcher = JsonRpcDispatcher(dict(METHODS))
        self.pulse: NotificationPulse | None = None
        self.address: tuple[str, int] | None = None
        self._runner: web.AppRunner | None = None
        self.refused: Counter[str] = Counter({"host": 0, "origin": 0, "content_type": 0})
        self._said = Throttle(60.0)
        server.register("lbmgmt:type=Management", ManagementMBean(self))

    @property
    def address_text(self) -> str:
        return format_address(self.address)

    @property
    def url(self) -> str:
        assert self.address is not None
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.address_text}"

    @property
    def parked_polls(self) -> int:
        """Long polls (pollNotifications) waiting for a notification right now."""
        return len(self.pulse.parked) if self.pulse is not None else 0

    async def start(self) -> None:
        self.pulse = NotificationPulse(self.server.notifications)
        app = web.Application(client_max_size=MAX_REQUEST,
                              middlewares=[self._guard, self._authenticate])
        app.router.add_post("/jsonrpc", self._jsonrpc)
        app.router.add_get("/metrics", self._metrics)
        self._runner, self.address = await serve_app(app, self.config.listen,
                                                     ssl_context=self.ssl_context)
        log.info("management port open", extra=fields(url=self.url,
                                                       auth=self.credentials is not None))

    async def stop(self) -> None:
        """Stop listening, then close every connection; never waits long, safe to repeat.

        Idle keep-alive clients are closed at once and long polls parked on the
        pulse are cancelled at once (they would otherwise hold the stop for the
        grace a request in flight gets); any other request gets that grace.
        """
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await stop_listening(runner, log=log, name="management port")
        if self.pulse is not None:
            self.pulse.close()
        await close_runner(runner, log=log, name="management port")

    # -- what a browser could forge ----------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                     ) -> web.StreamResponse:
        """Refuse what a web page could make a browser send, before any login: a Host
        that names another site (DNS rebinding), an Origin that is not this port's, a
        POST that is not application/json (forms and simple requests skip CORS)."""
        refusal = self._refusal(request)
        if refusal is None:
            return await handler(request)
        status, reason, message = refusal
        self.refused[reason] += 1
        client = request.remote or "?"
        held_back = self._said.allow((reason, client), self.monotonic())
        if held_back is not None:
            log.warning("management request refused", extra=fields(
                client=client, reason=reason, detail=message, held_back=held_back))
        return web.json_response({"error": message}, status=status)

    def _refusal(self, request: web.Request) -> tuple[int, str, str] | None:
        host = request.headers.get("Host")
        if host is not None and not self._host_allowed(host):
            return (421, "host", f"Host {host[:100]!r} is not this port's address "
                                 "(an IP address, localhost, or [management] allowed_hosts)")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, host, request.secure):
            return (403, "origin", f"Origin {origin[:100]!r} may not call this port "
                                   "([management] allowed_origins)")
        if request.method == "POST" and request.content_type != "application/json":
            return (415, "content_type", "POST /jsonrpc takes Content-Type: application/json")
        return None

    def _host_allowed(self, host: str) -> bool:
        name = host.strip().lower()
        if name.startswith("["):  # [v6]:port
            name = name[1:name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        if name == "localhost" or name in self.config.allowed_hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def _origin_allowed(self, origin: str, host: str | None, secure: bool) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if origin in self.config.allowed_origins:
            return True
        scheme = "https" if secure else "http"
        return host is not None and origin == f"{scheme}://{host.strip().lower()}"

    # -- auth ------------------------------------------------------------------
    @web.middleware
    async def _authenticate(self, request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
        if self.credentials is None:
            request[CALLER] = (Role.READWRITE, None)
            return await handler(request)
        client = request.remote or "?"
        now = self.monotonic()
        wait = self.limiter.retry_after(client, now)
        if wait > 0:
            return web.json_response({"error": "too many failed logins; try later"},
                                     status=429, headers={"Retry-After": str(int(wait) + 1)})
        user = await self._check(request.headers.get("Authorization", ""))
        if user is None:
            if "Authorization" in request.headers:
                self.limiter.failure(client, now)
                log.warning("management login failed", extra=fields(client=client))
            return web.json_response({"error": "authentication required"}, status=401,
                                     headers={"WWW-Authenticate": CHALLENGE})
        self.limiter.success(client)
        request[CALLER] = (user.role, user.name)
        return await handler(request)

    async def _check(self, header: str) -> User | None:
        assert self.credentials is not None
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value:
            return self.credentials.check_bearer(value.strip())
        if scheme.lower() == "basic" and value:
            try:
                user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            if not sep:
                return None
            return await self.credentials.check_basic(user, password)
        return None

    # -- handlers --------------------------------------------------------------
    async def _jsonrpc(self, request: web.Request) -> web.Response:
        role, user = request[CALLER]
        assert self.pulse is not None
        body = await request.read()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = "\ufffd"  # not JSON either: answered as a parse error
        context = CallContext(self.server, role, self.pulse, self.daemon, user)
        answer: Any = await self.dispatcher.dispatch(text, context)
        if answer is None:
            return web.Response(status=204)
        return web.Response(text=json.dumps(answer, default=str),
                            content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        text = await self.metrics.text()
        if len(text) <= WRITE_SLICE:
            return web.Response(body=text, headers=METRICS_HEADERS)
        # Megabytes (10 000 edges): written a slice a loop turn, as fast as the client
        # reads (aiohttp's write waits for the buffer to drain), not copied at once.
        response = web.StreamResponse(headers=METRICS_HEADERS)
        response.content_length = len(text)
        await response.prepare(request)
        view = memoryview(text)
        for start in range(0, len(view), WRITE_SLICE):
            await response.write(view[start:start + WRITE_SLICE])
            await asyncio.sleep(0)
        await response.write_eof()
        return response
