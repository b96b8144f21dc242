"""A keyless flood of the report port, as one local process sends it (tests, benchmarks).

    python -m lbmgmt.fleet.flood HOST PORT SECONDS [--distinct N]

Datagrams with the right header and a payload sealed under a guessed key, each with a
GUID of its own (the costliest kind for a receiver: a key derivation each), sent as
fast as one socket takes them for SECONDS; prints how many went out.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
import uuid

from lbmgmt.status import EdgeState, Report, ReportSealer, SharedKey


def keyless_datagrams(count: int) -> list[bytes]:
    guess = SharedKey("a guessed key")
    report = Report(EdgeState.RUNNING, "flood.example:1935", 0, 2500)
    now = time.time()
    return [ReportSealer(uuid.UUID(bytes=os.urandom(16))).seal(report, guess, now=now)
            for _ in range(count)]


def flood(host: str, port: int, seconds: float, distinct: int = 4096) -> int:
    datagrams = keyless_datagrams(distinct)
    sent = 0
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        send = sock.send
        n, i = len(datagrams), 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(256):  # (the clock read once per 256 sends)
                try:
                    send(datagrams[i])
                    sent += 1
                except OSError:  # (ENOBUFS, ECONNREFUSED from an earlier ICMP): go on
                    pass
                i = (i + 1) % n
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--distinct", type=int, default=4096)
    args = parser.parse_args()
    print(flood(args.host, args.port, args.seconds, args.distinct), flush=True)


if __name__ == "__main__":
    main()
