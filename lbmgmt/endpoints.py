"""``host:port`` strings as operators write them, IPv6 literals included."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # "" means every interface
    port: int

    @classmethod
    def parse(cls, text: str, *, default_port: int | None = None) -> Endpoint:
        """Parse ``host:port``, ``[v6]:port``, ``*:port``, ``:port`` or a bare host.

        Raises ValueError with a message fit to show next to the config field.
        """
        text = text.strip()
        if not text:
            raise ValueError("empty address")
        host, port_text = text, None
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ValueError(f"unclosed '[' in {text!r}")
            host, rest = text[1:end], text[end + 1:]
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"expected ':port' after ']' in {text!r}")
                port_text = rest[1:]
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        elif text.count(":") > 1:
            raise ValueError(f"IPv6 address must be written [addr]:port, not {text!r}")
        if port_text is None:
            if default_port is None:
                raise ValueError(f"missing port in {text!r}")
            port = default_port
        else:
            if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
                raise ValueError(f"bad port {port_text!r} in {text!r}")
            port = int(port_text)
        if host == "*":
            host = ""
        return cls(host, port)

    @property
    def bind_host(self) -> str | None:
        """What asyncio's create_server/create_datagram_endpoint want for 'all'."""
        return self.host or None

    def __str__(self) -> str:
        return join_host_port(self.host or "*", self.port)


def split_address(address: str) -> tuple[str, int | None]:
    """An edge's redirect address as (host, port or None).

    Edges report ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6
    literal; unlike ``Endpoint.parse`` this never fails, because the address
    is the edge's to choose and is passed on as given.
    """
    if address.startswith("[") and "]" in address:
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return host, int(port) if port.isdigit() else None
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return host, int(port) if port.isdigit() else None
    return address, None


def join_host_port(host: str, port: int | None) -> str:
    """``host:port``, with an IPv6 literal in brackets; ``host`` alone if no port.

    The one place addresses are written out (logs, URLs, status pages).
    """
    host = f"[{host}]" if ":" in host else host
    return host if port is None else f"{host}:{port}"


def url_authority(host: str, port: int | None) -> str:
    """``host[:port]`` fit for a URL in a header: an edge's address is its own text (UTF-8
    in its reports), so a non-ASCII name goes out as IDNA (``xn--``), and anything a host
    may not hold (``/?#@``, spaces, controls; or a name IDNA refuses) percent-encoded."""
    if not host.isascii():
        with contextlib.suppress(UnicodeError):
            host = host.encode("idna").decode("ascii")
    if not host.isascii() or any(c in _NOT_IN_HOST or c < " " or c == "\x7f" for c in host):
        host = quote(host, safe="!$&'()*+,;=:%.-_~")
    return join_host_port(host, port)


_NOT_IN_HOST = frozenset(" /?#@\"<>\\^`{|}")


def format_address(address: tuple[str, int] | tuple[str, int, int, int] | None) -> str:
    """A bound socket's address (``getsockname()``), or "-" for none."""
    return "-" if address is None else join_host_port(address[0], address[1])


class BindError(OSError):
    """A port that could not be bound, named: its protocol, address and setting."""

    def __init__(self, errno_: int | None, what: str, address: str, setting: str,
                 reason: str) -> None:
        super().__init__(errno_, reason)
        self.what, self.address, self.setting = what, address, setting

    def __str__(self) -> str:
        text = f"cannot listen on {self.what} {self.address}: {self.strerror}"
        if self.errno == errno.EADDRINUSE:
            text += f" (another process holds it; set another port in {self.setting})"
        elif self.errno == errno.EACCES:
            text += " (a port under 1024 needs privileges: CAP_NET_BIND_SERVICE)"
        return text


@contextlib.contextmanager
def binding(what: str, address: Endpoint | str, setting: str) -> Iterator[None]:
    """Raise what goes wrong binding inside as a ``BindError`` naming ``what`` (the
    protocol and its use: "UDP (edge reports)"), ``address`` and ``setting``."""
    try:
        yield
    except BindError:
        raise
    except OSError as exc:
        shown = str(address) if not isinstance(address, Endpoint) else (
            join_host_port(address.host or "*", address.port))
        # (the errno's own words: asyncio's message repeats the address)
        reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
        raise BindError(exc.errno, what, shown, setting, reason) from exc

