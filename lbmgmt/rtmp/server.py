"""The server side of an RTMP connection, sans-IO (h11-style, with aioquic's timers).

``receive_data(bytes, now=...)`` returns events; methods such as ``reject``
queue bytes that ``data_to_send()`` hands out. Any protocol violation ends in
one ``ConnectionFailed`` event and the CLOSED state, never an exception, so one
bad client cannot take anything else down.

Time is passed in, never read: ``now`` is any monotonic clock in seconds (the
glue passes ``loop.time()``). The connection keeps two deadlines, the
handshake's (from construction, not moved by handshake bytes: a client
trickling them gains nothing) and, once open, the idle one (moved by every
receive). ``get_timer()`` is the next one, absolute; ``handle_timer(now)``
past it closes the connection with one ``TimedOut`` event and queues no bytes.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lbmgmt.rtmp import chunks, handshake
from lbmgmt.rtmp.chunks import ChunkDecoder, ChunkEncoder, ChunkError, Message
from lbmgmt.rtmp.commands import Command, CommandError, command_message, parse_command

WINDOW = 2_500_000  # what we ask peers to acknowledge, as nginx-rtmp and Wowza do


class State(enum.Enum):
    HANDSHAKE_C0C1 = "waiting for C0+C1"
    HANDSHAKE_C2 = "waiting for C2"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    pass


@dataclass(frozen=True, slots=True)
class CommandReceived:
    command: Command


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A message that is not a command (audio, video, data, control)."""

    message: Message


@dataclass(frozen=True, slots=True)
class ConnectionFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    """A deadline passed (``handle_timer``): the connection is CLOSED, nothing to send."""

    reason: str  # "handshake timed out", "idle timed out", "no first byte"


Event = HandshakeCompleted | CommandReceived | MessageReceived | ConnectionFailed | TimedOut


def message_events(messages: list[Message]) -> list[Event]:
    """Commands parsed, everything else passed on as it came. Raises CommandError."""
    return [CommandReceived(parse_command(m))
            if m.type_id in (chunks.COMMAND_AMF0, chunks.COMMAND_AMF3) else MessageReceived(m)
            for m in messages]


class ServerConnection:
    """Deadlines in seconds (None: no such deadline), budgets in bytes.

    ``connect_timeout`` runs from the end of the handshake to the ``connect``
    command, and ``max_before_connect`` bounds the bytes a client may send in
    that time (also the most kept for a proxy's replay): a client that opens a
    connection and never says what it wants cannot keep it, however it trickles.
    """

    def __init__(self, *, max_chunk_size: int = 65536, max_message_size: int = 1 << 20,
                 random: Callable[[int], bytes] = os.urandom, time_ms: int = 0,
                 keep_raw: bool = False, handshake_timeout: float | None = None,
                 idle_timeout: float | None = None, connect_timeout: float | None = None,
                 max_before_connect: int | None = None, min_chunk_size: int = 1,
                 now: float = 0.0) -> None:
        self.state = State.HANDSHAKE_C0C1
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_before_connect = max_before_connect
        self._started = now
        self._last_receive = now  # once OPEN: the idle deadline counts from here
        self._opened = now  # when the handshake completed: the connect deadline counts from here
        self.connected = False  # a connect command arrived
        self._before_connect = 0  # bytes received OPEN before it
        self._random = random
        self._time_ms = time_ms
        self._in = bytearray()
        self._out = bytearray()
        self.decoder = ChunkDecoder(max_chunk_size=max_chunk_size,
                                    max_message_size=max_message_size,
                                    min_chunk_size=min_chunk_size)
        self.encoder = ChunkEncoder()
        self.bytes_received = 0
        self.peer_window: int | None = None
        self._acked = 0
        # For relaying to an edge: the client's C0+C1 and every byte after its C2.
        self.keep_raw = keep_raw
        self.raw_c0c1 = b""
        self.raw_after_handshake = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of the peer's held between calls (handshake, chunks, kept for a proxy)."""
        return len(self._in) + self.decoder.buffered + len(self.raw_after_handshake)

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def receive_data(self, data: bytes, now: float | None = None) -> list[Event]:
        """Events for these bytes; ``now`` moves the idle deadline (None: the last ``now``)."""
        if self.state is State.CLOSED:
            return []
        if now is not None:
            self._last_receive = now
        self.bytes_received += len(data)
        events: list[Event] = []
        try:
            self._receive(data, events)
        except (ChunkError, CommandError) as exc:
            self.state = State.CLOSED
            events.append(ConnectionFailed(str(exc)))
        return events

    # -- time ----------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """The next deadline (absolute, on the clock of ``now``), or None for none."""
        if self.state is State.CLOSED:
            return None
        if self.state is State.OPEN:
            idle = None if self.idle_timeout is None else self._last_receive + self.idle_timeout
            if self.connected or self.connect_timeout is None:
                return idle
            connect = self._opened + self.connect_timeout
            return connect if idle is None else min(idle, connect)
        return None if self.handshake_timeout is None else self._started + self.handshake_timeout

    def handle_timer(self, now: float) -> list[Event]:
        """Past the deadline: CLOSED, one ``TimedOut``, nothing queued. Before it: nothing."""
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return []
        if self.state is not State.OPEN:
            reason = "handshake timed out"
        elif (not self.connected and self.connect_timeout is not None
              and now >= self._opened + self.connect_timeout):
            reason = "no connect in time"
        else:
            reason = "idle timed out"
        self.state = State.CLOSED
        return [TimedOut(reason)]

    def _receive(self, data: bytes, events: list[Event]) -> None:
        if self.state is State.OPEN:
            if not self.connected:
                self._before_connect += len(data)
                if self.keep_raw:  # this feed whole: what follows a connect is replayed too
                    self.raw_after_handshake += data
            self._messages(self.decoder.feed(data), events)
            if (not self.connected and self.max_before_connect is not None
                    and self._before_connect > self.max_before_connect):
                raise ChunkError(f"no connect within {self.max_before_connect} bytes")
            self._maybe_ack()
            if self.decoder.error is not None:  # after the messages that came before it
                raise ChunkError(*self.decoder.error.args)  # (a copy: see ChunkDecoder)
            return
        self._in += data
        if self.state is State.HANDSHAKE_C0C1:
            if not self._in:
                return
            version = self._in[0]
            if version in handshake.ENCRYPTED_VERSIONS:
                raise ChunkError(f"encrypted RTMP (version {version}) is not supported")
            if version != handshake.VERSION:
                raise ChunkError(f"not an RTMP handshake (version byte {version})")
            if len(self._in) < 1 + handshake.PACKET:
                return
            c1 = bytes(self._in[1:1 + handshake.PACKET])
            self.raw_c0c1 = bytes(self._in[:1 + handshake.PACKET])
            del self._in[:1 + handshake.PACKET]
            self._out += handshake.server_reply(c1, time_ms=self._time_ms,
                                                random=self._random(handshake.PACKET - 8))
            self.state = State.HANDSHAKE_C2
        if self.state is State.HANDSHAKE_C2:
            if len(self._in) < handshake.PACKET:
                return
            # C2 should echo S1; clients differ in how exactly, and nothing depends on it.
            rest = bytes(self._in[handshake.PACKET:])
            self._in = bytearray()
            self.state = State.OPEN
            self._opened = self._last_receive
            events.append(HandshakeCompleted())
            if rest:
                self._receive(rest, events)

    def _messages(self, messages: list[Message], events: list[Event]) -> None:
        for message in messages:
            if message.type_id == chunks.WINDOW_ACK_SIZE and len(message.payload) >= 4:
                self.peer_window = int.from_bytes(message.payload[:4], "big") or None
        new = message_events(messages)
        if not self.connected and any(isinstance(e, CommandReceived) and e.command.name == "connect"
                                      for e in new):
            self.connected = True
        events += new

    def _maybe_ack(self) -> None:
        if self.peer_window and self.bytes_received - self._acked >= self.peer_window:
            self._acked = self.bytes_received
            self.send(chunks.acknowledgement(self.bytes_received))

    # -- what the application says -------------------------------------------------
    def send(self, message: Message) -> None:
        if self.state is not State.CLOSED:
            self._out += self.encoder.encode(message)

    def send_command(self, name: str, transaction_id: float, command_object: Any,
                     *args: Any, stream_id: int = 0) -> None:
        self.send(command_message(name, transaction_id, command_object, *args,
                                  stream_id=stream_id))

    def _preamble(self) -> None:
        self.send(chunks.window_ack_size(WINDOW))
        self.send(chunks.set_peer_bandwidth(WINDOW))

    def reject_connect(self, transaction_id: float, info: dict[str, Any]) -> None:
        """Answer ``connect`` with ``_error``; the caller closes after flushing."""
        self._preamble()
        self.send_command("_error", transaction_id, None, info)
        self.state = State.CLOSED

    def accept_connect(self, transaction_id: float, info: dict[str, Any]) -> None:
        self._preamble()
        self._out += self.encoder.set_chunk_size(4096)
        self.send_command("_result", transaction_id,
                          {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}, info)

    def close(self) -> None:
        self.state = State.CLOSED
