"""Serving an aiohttp application on one address, the way every lbmgmt port does.

Quiet (no access log: nothing logged per request), no signal handling of its
own (the daemons own their signals), a short shutdown, and the bound address
returned, so port 0 works for tests and the demo. Given a ``ConnectionGate``,
the port takes at most so many connections (in total and from one address)
and closes one that sends no complete request head in time: aiohttp has
neither cap nor head timeout of its own (its keep-alive timer starts only
after a first answer is written... and is an hour by default).

Also the shutdown helpers both daemons use: ``stop_step`` bounds one step of a
stop (a step that hangs is logged and skipped, never waited on for good), and
``stop_listening`` / ``close_runner`` take an aiohttp port down in that order:
no new connections first, then every open one closed, idle keep-alive ones
included.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lbmgmt.admission import Admission
from lbmgmt.endpoints import Endpoint
from lbmgmt.logs import fields
from lbmgmt.throttle import Throttle

# A request still running when its port stops gets this long to finish (aiohttp's
# shutdown_timeout: twice, once to finish and once after its request is cancelled).
SHUTDOWN_GRACE = 1.0
# The most any single step of a daemon's stop() may take before it is given up on.
STOP_STEP_TIMEOUT = 5.0


class RequestErrors(logging.LoggerAdapter):
    """aiohttp's own log of a request it could not parse or serve (a malformed head from
    anyone, before any login): said at warning without a traceback, once a minute per
    kind of error, the traceback at debug; counted in ``count``. (aiohttp logs each at
    error level with a traceback: a flood of bad requests was a flood of tracebacks.)"""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self.count = 0
        self._said = Throttle(60.0)

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kwargs: Any
                  ) -> None:
        self.error(msg, *args, exc_info=exc_info, **kwargs)

    def error(self, msg: object, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        self.count += 1
        error = exc_info if isinstance(exc_info, BaseException) else None
        what = type(error).__name__ if error is not None else str(msg)
        self.logger.debug(msg, *args, exc_info=exc_info)
        held_back = self._said.allow(what, time.monotonic())
        if held_back is not None:
            self.logger.warning("HTTP request not served", extra=fields(
                error=f"{what}: {str(error)[:200]}" if error is not None else what,
                held_back=held_back))


async def app_runner(app: web.Application, *, errors: RequestErrors | None = None
                     ) -> web.AppRunner:
    """A set-up runner with our settings, for serving on a site or on a socket of our own."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=SHUTDOWN_GRACE,
                           logger=errors or RequestErrors(logging.getLogger("lbmgmt.http")))
    await runner.setup()
    return runner


class ConnectionGate:
    """Connections of one aiohttp port: caps in total and per address, head timeout.

    ``middleware`` must be the app's first: it tells the gate when a request head
    has arrived (the timer stops) and when its handler is done (the timer starts
    again, for the next head on a keep-alive connection). A connection whose timer
    runs out is closed: counted as ``request_timeout`` if it had sent part of a
    head, closed quietly if it was idle. Counts are in ``hits`` by limit name.
    """

    def __init__(self, *, max_connections: int, max_connections_per_address: int,
                 request_timeout: float, log: logging.Logger, name: str) -> None:
        self.admission = Admission(max_connections, max_connections_per_address)
        self.request_timeout = request_timeout
        self.hits: Counter[str] = Counter({"connections": 0, "connections_per_address": 0,
                                           "request_timeout": 0, "write_timeout": 0})
        self.idle_closed = 0
        self.errors = RequestErrors(log)  # requests aiohttp could not parse or serve
        self._doors: dict[Any, _Door] = {}
        self._log = log
        self._name = name
        self._said = Throttle(60.0)

    @property
    def active(self) -> int:
        return self.admission.total

    def hit(self, limit: str, client: str) -> None:
        """Count a limit hit and say it (once a minute per limit and client)."""
        self.hits[limit] += 1
        held_back = self._said.allow((limit, client), time.monotonic())
        if held_back is not None:
            self._log.warning("connection refused or closed: over a limit", extra=fields(
                port=self._name, client=client, limit=limit, held_back=held_back))

    def door(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory: ``make``'s protocol behind this gate."""
        return lambda: _Door(self, make)

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        door = self._doors.get(request.transport)
        if door is not None:
            door.disarm()
        try:
            return await handler(request)
        finally:
            if door is not None:
                door.arm()


class _Door(asyncio.Protocol):
    """One connection: admitted (and handed to aiohttp's protocol) or closed at once."""

    __slots__ = ("_gate", "_make", "_inner", "_transport", "_address", "_timer", "_heard")

    def __init__(self, gate: ConnectionGate, make: Callable[[], asyncio.Protocol]) -> None:
        self._gate = gate
        self._make = make
        self._inner: Any = None
        self._transport: Any = None
        self._address = "?"
        self._timer: asyncio.TimerHandle | None = None
        self._heard = False  # bytes arrived since the timer started

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if peer else "?"
        refused = self._gate.admission.admit(self._address)
        if refused is not None:
            self._gate.hit("connections" if refused == "total" else "connections_per_address",
                           self._address)
            transport.abort()  # type: ignore[attr-defined]
            return
        self._transport = transport
        self._gate._doors[transport] = self
        self._inner = self._make()
        self.arm()
        self._inner.connection_made(transport)

    def arm(self) -> None:
        if self._transport is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._heard = False
        self._timer = asyncio.get_running_loop().call_later(self._gate.request_timeout,
                                                            self._expired)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._transport is None:
            return
        if self._heard:
            self._gate.hit("request_timeout", self._address)
        elif self._transport.get_write_buffer_size() > 0:  # an answer it never reads
            self._gate.hit("write_timeout", self._address)
            self._transport.abort()  # (close() would wait for the buffer to drain)
            return
        else:
            self._gate.idle_closed += 1
        self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._heard = True
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is None:
            return
        self.disarm()
        self._gate._doors.pop(self._transport, None)
        self._gate.admission.release(self._address)
        self._transport = None
        inner, self._inner = self._inner, None
        inner.connection_lost(exc)


class _GatedSite(web.TCPSite):
    """aiohttp's TCPSite, its connections through a ConnectionGate."""

    __slots__ = ("_gate",)

    def __init__(self, runner: web.AppRunner, host: str | None, port: int, *,
                 ssl_context: ssl.SSLContext | None, gate: ConnectionGate) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self._gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        # With TLS, asyncio hands a connection to the door only after its handshake:
        # the handshake gets the request timeout (asyncio's default is 60 s), and the
        # caps apply from then on.
        handshake = None if self._ssl_context is None else self._gate.request_timeout
        self._server = await asyncio.get_running_loop().create_server(
            self._gate.door(server), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, ssl_handshake_timeout=handshake)


async def serve_app(app: web.Application, listen: Endpoint, *,
                    ssl_context: ssl.SSLContext | None = None,
                    gate: ConnectionGate | None = None
                    ) -> tuple[web.AppRunner, tuple[str, int]]:
    runner = await app_runner(app, errors=gate.errors if gate is not None else None)
    try:
        site = (web.TCPSite(runner, listen.bind_host, listen.port, ssl_context=ssl_context)
                if gate is None else
                _GatedSite(runner, listen.bind_host, listen.port, ssl_context=ssl_context,
                           gate=gate))
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    return runner, (host, port)


async def stop_step(step: str, awaitable: Awaitable[object], *, log: logging.Logger,
                    steps: int = 1) -> bool:
    """Await one step of a shutdown for at most ``STOP_STEP_TIMEOUT`` s.

    ``steps``: the step is itself made of that many bounded steps (a port's whole
    stop), so it gets that many times the bound. A step that times out (it is
    cancelled) or fails is logged at warning, naming it, and False returned: the
    stop goes on with its next step instead of hanging or leaving the rest open.
    Cancelling the caller still cancels it.
    """
    limit = STOP_STEP_TIMEOUT * steps
    try:
        async with asyncio.timeout(limit):
            await awaitable
    except TimeoutError:
        log.warning("stop step timed out; going on", extra=fields(step=step, timeout_s=limit))
        return False
    except Exception as exc:
        log.warning("stop step failed; going on", extra=fields(
            step=step, error=str(exc) or type(exc).__name__))
        return False
    return True


async def stop_listening(runner: web.AppRunner, *, log: logging.Logger, name: str) -> None:
    """Close the runner's listening sockets; its open connections stay up for now."""
    for site in list(runner.sites):
        await stop_step(f"{name}: stop listening", site.stop(), log=log)


async def close_runner(runner: web.AppRunner, *, log: logging.Logger, name: str) -> None:
    """Stop listening, close every connection, clean the application up: all bounded.

    aiohttp closes idle keep-alive connections at once, gives a request in flight
    ``SHUTDOWN_GRACE`` to finish, then cancels it. Should that still not be done
    in time, every connection aiohttp holds is closed without waiting any longer.
    """
    await stop_listening(runner, log=log, name=name)
    server = runner.server
    if not await stop_step(f"{name}: close connections", runner.cleanup(), log=log):
        for handler in server.connections if server is not None else ():
            handler.force_close()
