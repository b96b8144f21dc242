"""Free loopback ports, and waiting for a port to listen."""

from __future__ import annotations

import socket
import time
from collections import deque

HOST = "127.0.0.1"

# Ports handed out lately by this process: a port is free until whoever it went to binds
# it, and the kernel may hand the same one out again meanwhile (a balancer process picked
# one for its HTTP port; nginx, started next, got the same for its stat page first).
_HANDED_OUT: deque[int] = deque(maxlen=4096)


def free_port(kind: int = socket.SOCK_STREAM, host: str = HOST) -> int:
    """A port the kernel has free now (TCP by default, ``socket.SOCK_DGRAM`` for UDP),
    never one this process handed out lately."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(family, kind) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.append(port)
            return port


def wait_port(port: int, timeout: float = 30.0, host: str = HOST) -> None:
    """Block until ``host:port`` accepts a TCP connection; OSError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
