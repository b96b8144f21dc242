"""The client side of an RTMP connection, sans-IO: enough to ``connect`` and read the answer.

Used by ``lbmgmt resolve`` (connect to a redirect application, read the edge
URL from the rejection) and by the tests as the server's in-memory peer.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import Any

from lbmgmt.rtmp import handshake
from lbmgmt.rtmp.chunks import ChunkDecoder, ChunkEncoder, ChunkError, Message
from lbmgmt.rtmp.commands import CommandError, command_message
from lbmgmt.rtmp.server import ConnectionFailed, Event, HandshakeCompleted, message_events


class ClientState(enum.Enum):
    HANDSHAKE = "waiting for S0+S1+S2"
    OPEN = "open"
    CLOSED = "closed"


class ClientConnection:
    def __init__(self, *, random: Callable[[int], bytes] = os.urandom,
                 time_ms: int = 0) -> None:
        self.state = ClientState.HANDSHAKE
        self._in = bytearray()
        self.c1 = handshake.packet(time_ms, random(handshake.PACKET - 8))
        self._out = bytearray(bytes((handshake.VERSION,)) + self.c1)
        self.decoder = ChunkDecoder(max_chunk_size=1 << 24, max_message_size=1 << 24)
        self.encoder = ChunkEncoder()
        self.s2_matches_c1: bool | None = None

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if self.state is ClientState.CLOSED:
            return events
        try:
            if self.state is ClientState.OPEN:
                events += message_events(self.decoder.feed(data))
                return events
            self._in += data
            size = 1 + 2 * handshake.PACKET
            if self._in and self._in[0] != handshake.VERSION:
                raise ChunkError(f"server answered handshake version {self._in[0]}")
            if len(self._in) < size:
                return events
            s1 = bytes(self._in[1:1 + handshake.PACKET])
            s2 = bytes(self._in[1 + handshake.PACKET:size])
            self.s2_matches_c1 = s2 == self.c1
            rest = bytes(self._in[size:])
            self._in = bytearray()
            self._out += s1  # C2 echoes S1
            self.state = ClientState.OPEN
            events.append(HandshakeCompleted())
            if rest:
                events += message_events(self.decoder.feed(rest))
        except (ChunkError, CommandError) as exc:
            self.state = ClientState.CLOSED
            events.append(ConnectionFailed(str(exc)))
        return events

    def send(self, message: Message) -> None:
        self._out += self.encoder.encode(message)

    def connect(self, app: str, tc_url: str, *, transaction_id: float = 1.0,
                **properties: Any) -> None:
        """Queue ``connect``; call after HandshakeCompleted."""
        if self.state is not ClientState.OPEN:
            raise RuntimeError("connect before the handshake completed")
        command = {"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0 (lbmgmt)",
                   "tcUrl": tc_url, **properties}
        self.send(command_message("connect", transaction_id, command))
