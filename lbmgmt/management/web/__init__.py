"""The management port's status page: ``GET /`` with its one script and style sheet.

Plain files shipped in this package, no build step. The script asks ``POST /jsonrpc``
like any other client, from the port's own origin, so the page sees and does exactly
what the caller's login may: the port's Host, Origin and Content-Type checks and its
login apply to the page and its calls as to everything else on the port.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

# path: (file in this package, content type)
FILES = {
    "/": ("index.html", "text/html"),
    "/status.js": ("status.js", "text/javascript"),
    "/status.css": ("status.css", "text/css"),
}

# The page loads nothing but its own files and talks to nothing but its own port: no
# inline script or style, no frame may hold it (clickjacking a drain button), no other
# site may read or embed it, and nothing is cached (it shows live figures, maybe behind
# a login).
CONTENT_SECURITY_POLICY = ("default-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@functools.cache
def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def _handler(name: str, content_type: str
             ) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=_read(name), content_type=content_type, charset="utf-8",
                            headers=HEADERS)
    return serve


def add_status_page(app: web.Application) -> None:
    """Route ``GET /``, ``/status.js`` and ``/status.css`` (HEAD too) on ``app``."""
    for path, (name, content_type) in FILES.items():
        app.router.add_get(path, _handler(name, content_type))
