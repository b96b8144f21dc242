"""Serving an aiohttp application on one address, the way every lbmgmt port does.

Quiet (no access log: nothing logged per request), no signal handling of its
own (the daemons own their signals), a short shutdown, and the bound address
returned, so port 0 works for tests and the demo.
"""

from __future__ import annotations

import ssl

from aiohttp import web

from lbmgmt.endpoints import Endpoint


async def app_runner(app: web.Application) -> web.AppRunner:
    """A set-up runner with our settings, for serving on a site or on a socket of our own."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
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
