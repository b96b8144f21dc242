"""TCP sockets on given local ports, from the kernel's sock_diag netlink interface (Linux).

``ss -tan '( sport = :1935 )'`` asks the same way: one dump request per address family,
with a filter (inet_diag bytecode) the kernel runs on every socket, so only the sockets on
the watched ports come back. Reading /proc/net/tcp instead returns every TCP socket of the
host as text (28 000 rows on a busy host) for Python to parse.

``dump_request`` and ``parse_dump`` are sans-IO (bytes in, bytes out; tested without a
kernel); ``port_states`` does the I/O, blocking (callers run it in a thread). No
maintained library builds the bytecode filter (pyroute2 dumps every socket and decodes
each in Python), so this is ours: linux/inet_diag.h and linux/sock_diag.h are the spec.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from collections.abc import Iterable

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3

TCP_ESTABLISHED = 1
TCP_LISTEN = 10

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
REQ_V2 = struct.Struct("=BBBxI48x")  # family, protocol, ext, pad, states, sockid (zeros)
RTATTR = struct.Struct("=HH")  # len, type
BC_OP = struct.Struct("=BBH")  # code, yes, no
DIAG_MSG_HEAD = struct.Struct("=BB2xH")  # family, state, timer, retrans, sport (big-endian)
MAX_PORTS = 64


class SockDiagError(OSError):
    """The kernel refused or cut short the dump."""


class SockDiagUnavailable(OSError):
    """This host has no sock_diag for us (not Linux, or netlink refused)."""


def port_filter(ports: Iterable[int]) -> bytes:
    """Bytecode the kernel runs on each socket: its local port is one of ``ports``.

    Each port is a test of two comparisons, ``sport >= p`` then ``sport <= p`` (each an
    op, then an op whose ``no`` holds the port), as older ss compiles ``sport = :p``: the
    equality op (S_EQ) came only with Linux 4.16. A comparison that holds goes on to the
    next op; one that fails skips to the next test. Between two tests a JMP (which always
    takes its ``no``) carries a match to the end; a miss of the last test jumps past the
    end (reject). The kernel checks that every jump lands on an op reached by ``yes``.
    """
    ports = sorted(set(ports))
    if not 0 < len(ports) <= MAX_PORTS:
        raise ValueError(f"between 1 and {MAX_PORTS} ports, not {len(ports)}")
    ops = []
    for i, port in enumerate(ports):
        ops.append(BC_OP.pack(INET_DIAG_BC_S_GE, 8, 20) + BC_OP.pack(0, 0, port)
                   + BC_OP.pack(INET_DIAG_BC_S_LE, 8, 12) + BC_OP.pack(0, 0, port))
        rest = len(ports) - 1 - i  # tests after this one
        if rest:
            ops.append(BC_OP.pack(INET_DIAG_BC_JMP, 4, 4 + rest * 16 + (rest - 1) * 4))
    return b"".join(ops)


def dump_request(family: int, ports: Iterable[int], *, states: int, seq: int = 1) -> bytes:
    """One netlink message asking for the TCP sockets of ``family`` in ``states`` (a bit
    mask: 1 << TCP_ESTABLISHED ...) whose local port is one of ``ports``."""
    bytecode = port_filter(ports)
    attr = RTATTR.pack(RTATTR.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    attr += b"\0" * (-len(attr) % 4)
    body = REQ_V2.pack(family, socket.IPPROTO_TCP, 0, states) + attr
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                         NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def parse_dump(data: bytes, counts: Counter[tuple[int, int]]) -> bool:
    """Count each socket in one datagram of the answer by (state, local port) into
    ``counts``; True once the dump is done. SockDiagError if the kernel said no."""
    at = 0
    while at + NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = NLMSGHDR.unpack_from(data, at)
        if length < NLMSGHDR.size or at + length > len(data):
            raise SockDiagError("truncated netlink message")
        body = at + NLMSGHDR.size
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, body)
            raise SockDiagError(-code, f"sock_diag: {socket_error(-code)}")
        if kind == SOCK_DIAG_BY_FAMILY and length >= NLMSGHDR.size + DIAG_MSG_HEAD.size:
            _, state, sport_be = DIAG_MSG_HEAD.unpack_from(data, body)
            counts[state, socket.ntohs(sport_be)] += 1
        at += (length + 3) & ~3
    return False


def socket_error(code: int) -> str:
    import os
    return os.strerror(code)


def port_states(ports: Iterable[int], *, states: int = (1 << TCP_ESTABLISHED) | (1 << TCP_LISTEN),
                families: Iterable[int] = (socket.AF_INET, socket.AF_INET6),
                ) -> Counter[tuple[int, int]]:
    """The host's TCP sockets on ``ports`` (IPv4 and IPv6), counted by (state, port).
    Blocking: a few milliseconds on a quiet host. SockDiagUnavailable if this host has no
    sock_diag (not Linux, or netlink refused); SockDiagError if the kernel said no."""
    ports = list(ports)
    counts: Counter[tuple[int, int]] = Counter()
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    except (OSError, AttributeError) as exc:  # (no AF_NETLINK off Linux)
        raise SockDiagUnavailable(getattr(exc, "errno", None) or 0, str(exc)) from None
    with sock:
        sock.settimeout(5.0)
        for seq, family in enumerate(families, 1):
            sock.send(dump_request(family, ports, states=states, seq=seq))
            while not parse_dump(sock.recv(1 << 16), counts):
                pass
    return counts
