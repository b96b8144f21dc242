"""Raw clients of the daemons' ports, for tests that hold connections open.

Each one does what a real client would and then idles; ``all_see_eof`` waits
(with a hang guard, never a performance bound) until the daemon closes them.
"""

from __future__ import annotations

import asyncio
import json

from lbmgmt.fleet.ports import HOST
from lbmgmt.rtmp import handshake
from lbmgmt.rtmp.client import ClientConnection
from lbmgmt.rtmp.server import HandshakeCompleted

HANG = 30.0  # a hang guard, never a performance bound


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length: status and body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(":", 1)[1]) for line in lines[1:]
                  if line.lower().startswith("content-length:"))
    return status, await reader.readexactly(length)


async def keep_alive_client(port: int, method: str, path: str, body: bytes = b""
                            ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that made one keep-alive request, read the whole answer and now idles."""
    reader, writer = await asyncio.open_connection(HOST, port)
    head = (f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: keep-alive\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    writer.write(head.encode() + body)
    status, _ = await read_response(reader)
    assert status == 200
    return reader, writer


async def long_poll(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A pollNotifications asking to wait 60 s for a notification (none will come)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "pollNotifications",
                       "params": {"since": None, "timeout": 60}}).encode()
    writer.write(f"POST /jsonrpc HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                 .encode() + body)
    return reader, writer


async def idle_rtmp_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that completed the RTMP handshake (C0C1, S0S1S2, C2) and sends nothing else."""
    reader, writer = await asyncio.open_connection(HOST, port)
    conn = ClientConnection()
    writer.write(conn.data_to_send())  # C0 + C1
    events = conn.receive_data(await reader.readexactly(1 + 2 * handshake.PACKET))
    assert any(isinstance(e, HandshakeCompleted) for e in events)
    writer.write(conn.data_to_send())  # C2
    return reader, writer


async def sees_eof(reader: asyncio.StreamReader) -> bytes:
    """Whatever arrives before the connection ends (EOF or a reset); hangs while it is open."""
    got = bytearray()
    try:
        while chunk := await reader.read(65536):
            got += chunk
    except ConnectionError:
        pass
    return bytes(got)


async def all_see_eof(groups: dict[str, list[asyncio.StreamReader]]) -> dict[str, list[bytes]]:
    """What each client got before its connection ended; fails naming those still open."""
    tasks = {name: [asyncio.ensure_future(sees_eof(r)) for r in readers]
             for name, readers in groups.items()}
    _, pending = await asyncio.wait([t for ts in tasks.values() for t in ts], timeout=HANG)
    for task in pending:
        task.cancel()
    still_open = {name: sum(t in pending for t in ts) for name, ts in tasks.items()}
    assert not pending, f"still open {HANG:.0f} s after stop(): {still_open}"
    return {name: [t.result() for t in ts] for name, ts in tasks.items()}
