"""Relaying bytes between two sockets without handling them byte by byte in Python.

Each direction ``recv_into`` a reused 1 MiB buffer and ``sendall`` from it,
so each system call moves up to 1 MiB. It honours backpressure (a slow
receiver stops reads from its sender: the next read waits for the send) and
half-close (EOF on one side is passed on as a write shutdown to the other).
``os.splice`` (socket → pipe → socket) was measured slower than this copy over
loopback (0.43 vs 0.54 of a direct connection, docs/performance.md), so this
is the one relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket

CHUNK = 1 << 20
_GONE = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT)


async def _copy(loop: asyncio.AbstractEventLoop, src: socket.socket,
                dst: socket.socket) -> int:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    moved = 0
    try:
        while True:
            n = await loop.sock_recv_into(src, buffer)
            if n == 0:
                break
            await loop.sock_sendall(dst, view[:n])
            moved += n
    except OSError as exc:
        if exc.errno not in _GONE:
            raise
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
    return moved


async def relay(a: socket.socket, b: socket.socket) -> tuple[int, int]:
    """Relay until both directions reach EOF (or either side resets).

    Both sockets must be non-blocking; the caller closes them afterwards.
    Returns the bytes moved a→b and b→a. Cancelled, it shuts both sockets down
    (each peer sees EOF at once, whoever else holds a descriptor for them) and
    re-raises: the caller still closes them.
    """
    loop = asyncio.get_running_loop()
    try:
        results = await asyncio.gather(_copy(loop, a, b), _copy(loop, b, a),
                                       return_exceptions=True)
    except asyncio.CancelledError:
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        raise
    ab, ba = (r if isinstance(r, int) else 0 for r in results)
    return ab, ba
