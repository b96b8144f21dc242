"""Serving an aiohttp application on one address, the way every lbmgmt port does.

Quiet (no access log: nothing logged per request), no signal handling of its
own (the daemons own their signals), a short shutdown, and the bound address
returned, so port 0 works for tests and the demo.

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
from collections.abc import Awaitable

from aiohttp import web

from lbmgmt.endpoints import Endpoint
from lbmgmt.logs import fields

# A request still running when its port stops gets this long to finish (aiohttp's
# shutdown_timeout: twice, once to finish and once after its request is cancelled).
SHUTDOWN_GRACE = 1.0
# The most any single step of a daemon's stop() may take before it is given up on.
STOP_STEP_TIMEOUT = 5.0


async def app_runner(app: web.Application) -> web.AppRunner:
    """A set-up runner with our settings, for serving on a site or on a socket of our own."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    return runner


async def serve_app(app: web.Application, listen: Endpoint, *,
                    ssl_context: ssl.SSLContext | None = None
                    ) -> tuple[web.AppRunner, tuple[str, int]]:
    runner = await app_runner(app)
    try:
        await web.TCPSite(runner, listen.bind_host, listen.port, ssl_context=ssl_context).start()
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
