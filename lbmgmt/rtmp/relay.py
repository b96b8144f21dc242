"""Relaying bytes between two sockets without handling them byte by byte in Python.

Two ways, both moving up to 1 MiB per system call: ``recv_into`` a reused
buffer and ``sendall`` from it (the default), or ``os.splice`` socket → pipe
→ socket, where the kernel moves pages and Python only sees byte counts
(``LBMGMT_RELAY=splice``, Linux). bench/relay.py measured the buffer copy
faster over loopback here (0.54 vs 0.43 of a direct connection, see
docs/performance.md), so it is the default. Both honour backpressure (a slow
receiver stops reads from its sender) and half-close (EOF on one side is
passed on as a write shutdown to the other).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket

CHUNK = 1 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
HAS_SPLICE = hasattr(os, "splice")
USE_SPLICE = HAS_SPLICE and os.environ.get("LBMGMT_RELAY", "copy") == "splice"
_GONE = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT)


class _SplicePump:
    """One direction, src → pipe → dst, driven by readiness callbacks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, src: socket.socket,
                 dst: socket.socket) -> None:
        self.loop, self.src, self.dst = loop, src, dst
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.w, F_SETPIPE_SZ, PIPE_SIZE)
        self.pending = 0  # bytes sitting in the pipe
        self.moved = 0
        self.eof = False
        self.done: asyncio.Future[int] = loop.create_future()

    def start(self) -> None:
        self.loop.add_reader(self.src.fileno(), self._readable)

    def _finish(self, error: BaseException | None = None) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.src.fileno())
        with contextlib.suppress(Exception):
            self.loop.remove_writer(self.dst.fileno())
        for fd in (self.r, self.w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if not self.done.done():
            if error is None:
                self.done.set_result(self.moved)
            else:
                self.done.set_exception(error)

    def _readable(self) -> None:
        # Move as much as the source has now: one wake-up, many splices, fewer epoll calls.
        while not self.done.done():
            try:
                n = os.splice(self.src.fileno(), self.w, CHUNK,
                              flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                return
            except OSError as exc:
                self._finish(exc if exc.errno not in _GONE else None)
                return
            if n == 0:
                self.eof = True
                self.loop.remove_reader(self.src.fileno())
                self._drain()
                return
            self.pending += n
            if not self._drain():
                return  # the receiver is full: _writable takes over

    def _drain(self) -> bool:
        """Empty the pipe into dst; False if dst is full (reading stops until it drains)."""
        while self.pending:
            try:
                n = os.splice(self.r, self.dst.fileno(), self.pending,
                              flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                # The receiver is slow: stop reading until it takes what we hold.
                with contextlib.suppress(Exception):
                    self.loop.remove_reader(self.src.fileno())
                self.loop.add_writer(self.dst.fileno(), self._writable)
                return False
            except OSError as exc:
                self._finish(exc if exc.errno not in _GONE else None)
                return False
            self.pending -= n
            self.moved += n
        if self.eof:
            with contextlib.suppress(OSError):
                self.dst.shutdown(socket.SHUT_WR)
            self._finish()
            return False
        return True

    def _writable(self) -> None:
        self.loop.remove_writer(self.dst.fileno())
        self._drain()
        if not self.pending and not self.eof and not self.done.done():
            self.loop.add_reader(self.src.fileno(), self._readable)


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


async def relay(a: socket.socket, b: socket.socket, *, use_splice: bool = USE_SPLICE
                ) -> tuple[int, int]:
    """Relay until both directions reach EOF (or either side resets).

    Both sockets must be non-blocking; the caller closes them afterwards.
    Returns the bytes moved a→b and b→a. Cancelled, it shuts both sockets down
    (each peer sees EOF at once, whoever else holds a descriptor for them) and
    re-raises: the caller still closes them.
    """
    loop = asyncio.get_running_loop()
    results: list[int | BaseException]
    try:
        if use_splice:
            pumps = [_SplicePump(loop, a, b), _SplicePump(loop, b, a)]
            for pump in pumps:
                pump.start()
            try:
                results = list(await asyncio.gather(*(p.done for p in pumps),
                                                    return_exceptions=True))
            finally:
                for pump in pumps:
                    pump._finish()
        else:
            results = list(await asyncio.gather(_copy(loop, a, b), _copy(loop, b, a),
                                                return_exceptions=True))
    except asyncio.CancelledError:
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        raise
    ab, ba = (r if isinstance(r, int) else 0 for r in results)
    return ab, ba
