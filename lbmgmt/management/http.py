"""The management port (aiohttp): POST /jsonrpc, GET /metrics and the status page (GET /),
behind auth."""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from lbmgmt import __version__
from lbmgmt.endpoints import format_address
from lbmgmt.httpserve import ConnectionGate, close_runner, serve_app, stop_listening
from lbmgmt.logs import fields
from lbmgmt.management.api import METHODS, CallContext, NotificationPulse
from lbmgmt.management.auth import Credentials, LoginLimiter, User
from lbmgmt.management.config import ManagementConfig
from lbmgmt.management.jsonrpc import JsonRpcDispatcher
from lbmgmt.management.mbean import MBean, attribute
from lbmgmt.management.metrics import Metrics
from lbmgmt.management.runtime import RuntimeMBean, RuntimeWatch
from lbmgmt.management.server import MBeanServer, Role
from lbmgmt.management.web import add_status_page
from lbmgmt.throttle import Throttle

log = logging.getLogger("lbmgmt.management")

METRICS_HEADERS = {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
WRITE_SLICE = 256 * 1024  # bytes of a big /metrics answer written per loop turn

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

    @attribute("integer", "Connections open to the management port now")
    def Connections(self) -> int:
        return self.port.gate.active

    @attribute("object", "Budgets hit since start, by limit: connections, "
               "connections_per_address (a new connection closed at once), request_timeout "
               "(no complete head or body in time), write_timeout (an answer not read in "
               "time), bad_http (a request HTTP could not parse: 400), request_bytes (413), "
               "bad_json (-32700), "
               "batch (over max_batch), response_bytes (an answer over max_response_bytes), "
               "polls, polls_per_address (the oldest long poll answered to make room)",
               metric="counter", metric_label="limit")
    def LimitsHit(self) -> dict[str, int]:
        return self.port.limits_hit()


def _basic(value: str) -> tuple[str, str] | None:
    """(user, password) of a Basic credential, or None if it is not one."""
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


Credential = tuple[str, str] | str | None


def _credential(header: str) -> Credential:
    """What an Authorization header carries: (user, password) for Basic, the token for
    Bearer, None for anything else. Read once per request."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if scheme.lower() == "basic" and value:
        return _basic(value)
    return None


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
        limits = config.limits
        self.dispatcher = JsonRpcDispatcher(dict(METHODS), max_batch=limits.max_batch,
                                            max_response_bytes=limits.max_response_bytes)
        self.gate = ConnectionGate(max_connections=limits.max_connections,
                                   max_connections_per_address=limits.max_connections_per_address,
                                   request_timeout=limits.request_timeout, log=log,
                                   name=f"{daemon} management")
        self.hits: Counter[str] = Counter({"request_bytes": 0})
        self._checking: dict[str, asyncio.Lock] = {}  # per address: a login being checked
        self.pulse: NotificationPulse | None = None
        self.address: tuple[str, int] | None = None
        self._runner: web.AppRunner | None = None
        self.refused: Counter[str] = Counter({"host": 0, "origin": 0, "content_type": 0})
        self._said = Throttle(60.0)
        self.runtime = RuntimeWatch(monotonic)
        server.register("lbmgmt:type=Management", ManagementMBean(self))
        server.register("lbmgmt:type=Runtime", RuntimeMBean(self.runtime))

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

    def limits_hit(self) -> dict[str, int]:
        hits = Counter(self.gate.hits)
        hits["bad_http"] = self.gate.errors.count
        hits.update(self.hits)
        hits.update(self.dispatcher.hits)
        if self.pulse is not None:
            hits.update(self.pulse.released)
        return dict(hits)

    async def start(self) -> None:
        limits = self.config.limits
        self.pulse = NotificationPulse(self.server.notifications, max_parked=limits.max_polls,
                                       max_per_address=limits.max_polls_per_address)
        app = web.Application(client_max_size=limits.max_request_bytes,
                              middlewares=[self.gate.middleware, self._guard,
                                           self._authenticate])
        app.router.add_post("/jsonrpc", self._jsonrpc)
        app.router.add_get("/metrics", self._metrics)
        add_status_page(app)  # GET /: a page asking /jsonrpc, under the same checks
        self._runner, self.address = await serve_app(app, self.config.listen,
                                                     ssl_context=self.ssl_context,
                                                     gate=self.gate)
        self.runtime.start()
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
        await self.runtime.stop()
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
        if len(request.headers.getall("Host", [])) > 1:
            return (421, "host", "more than one Host header")
        if len(request.headers.getall("Origin", [])) > 1:
            return (403, "origin", "more than one Origin header")
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
        if name.startswith("["):  # [v6] or [v6]:port, nothing else after the bracket
            end = name.find("]")
            rest = name[end + 1:] if end > 0 else "?"
            if rest and not (rest.startswith(":") and rest[1:].isdigit()):
                return False
            name = name[1:end]
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        if "%" in name:  # a scoped address's zone is no name a browser sends
            return False
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
        header = request.headers.get("Authorization")
        credential = _credential(header) if header is not None else None
        # Failures are counted per address and per the user name claimed (cut to 64
        # characters); a bearer token claims none.
        claimed = credential[0][:64] if isinstance(credential, tuple) else None
        # One password check at a time per address: the next waits for the last one's
        # verdict (and its count), so parallel guesses cannot all pass the limit first.
        lock = self._checking.get(client)
        if lock is None:
            lock = self._checking[client] = asyncio.Lock()
        try:
            async with lock:
                now = self.monotonic()
                wait = self.limiter.retry_after(client, claimed, now)
                if wait > 0:
                    return web.json_response(
                        {"error": "too many failed logins; try later"}, status=429,
                        headers={"Retry-After": str(int(wait) + 1)})
                user = await self._check(credential)
                if user is None and header is not None:
                    self.limiter.failure(client, claimed, now)
        finally:
            if not lock.locked() and self._checking.get(client) is lock:
                del self._checking[client]
        if user is None:
            if header is not None:
                held_back = self._said.allow(("login", client), now)
                if held_back is not None:
                    log.warning("management login failed", extra=fields(
                        client=client, user=claimed if claimed is not None else "(bearer)",
                        held_back=held_back))
            return web.json_response({"error": "authentication required"}, status=401,
                                     headers={"WWW-Authenticate": CHALLENGE})
        self.limiter.success(client, claimed)
        request[CALLER] = (user.role, user.name)
        return await handler(request)

    async def _check(self, credential: Credential) -> User | None:
        assert self.credentials is not None
        if isinstance(credential, tuple):
            return await self.credentials.check_basic(*credential)
        if isinstance(credential, str):
            return self.credentials.check_bearer(credential)
        return None

    # -- handlers --------------------------------------------------------------
    async def _jsonrpc(self, request: web.Request) -> web.Response:
        role, user = request[CALLER]
        assert self.pulse is not None
        client = request.remote or "?"
        try:
            async with asyncio.timeout(self.config.limits.request_timeout):
                body = await request.read()
        except TimeoutError:
            self.gate.hit("request_timeout", client)
            raise web.HTTPRequestTimeout(text="the request body came too slowly",
                                         headers={"Connection": "close"}) from None
        except web.HTTPRequestEntityTooLarge:
            self.hits["request_bytes"] += 1
            raise
        except ConnectionError:  # the client went away mid-body: nothing to answer
            log.debug("management client closed mid-request", extra=fields(client=client))
            raise web.HTTPBadRequest() from None
        context = CallContext(self.server, role, self.pulse, self.daemon, user, client)
        answer = await self.dispatcher.answer(body, context)
        if answer is None:
            return web.Response(status=204)
        return web.Response(body=answer, content_type="application/json")

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
