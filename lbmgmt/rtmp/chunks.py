"""The RTMP chunk stream: messages cut into chunks, sans-IO.

``ChunkDecoder`` takes bytes as they arrive and returns whole messages; it
applies Set Chunk Size and Abort itself, since they change how the very next
chunk is read. ``ChunkEncoder`` does the reverse. All four chunk header
formats and extended timestamps are handled; every size is capped, so a peer
cannot make the decoder hold more than ``max_buffered`` bytes between calls:
``max_message_size`` per chunk stream for ``max_streams`` streams, and one
incomplete chunk. A broken stream releases everything it held.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Message types (RTMP spec 5.4 and 7.1)
SET_CHUNK_SIZE, ABORT, ACKNOWLEDGEMENT, USER_CONTROL = 1, 2, 3, 4
WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH = 5, 6
AUDIO, VIDEO = 8, 9
DATA_AMF3, SHARED_OBJECT_AMF3, COMMAND_AMF3 = 15, 16, 17
DATA_AMF0, SHARED_OBJECT_AMF0, COMMAND_AMF0 = 18, 19, 20
AGGREGATE = 22

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE_LIMIT = 0x7FFFFFFF
EXTENDED = 0xFFFFFF
MAX_HEADER = 3 + 11 + 4  # basic header, message header, extended timestamp
PROTOCOL_CSID = 2  # protocol control messages
COMMAND_CSID = 3

_U32 = struct.Struct("!I")
_U32LE = struct.Struct("<I")


class ChunkError(ValueError):
    """The peer broke the chunk stream; the connection cannot go on."""


@dataclass(frozen=True, slots=True)
class Message:
    type_id: int
    payload: bytes
    stream_id: int = 0
    timestamp: int = 0
    csid: int = COMMAND_CSID


@dataclass(slots=True)
class _StreamState:
    """What a chunk stream remembers for headers that omit fields (formats 1-3)."""

    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False  # the last header carried an extended timestamp
    partial: bytearray | None = None  # payload of the message being assembled


class ChunkDecoder:
    def __init__(self, *, max_chunk_size: int = 65536, max_message_size: int = 1 << 20,
                 max_streams: int = 64, min_chunk_size: int = 1) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_chunk_size = max_chunk_size
        # A floor on Set Chunk Size: 1-byte chunks cost a header each, for nothing.
        self.min_chunk_size = min_chunk_size
        self.max_message_size = max_message_size
        self.max_streams = max_streams
        self._streams: dict[int, _StreamState] = {}
        self._buffer = bytearray()
        # Why the stream broke. Never raised itself: a raised exception's traceback holds
        # the frames it passed, and so this decoder, in a cycle that outlives the
        # connection until the garbage collector finds it; a fresh copy is raised.
        self.error: ChunkError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held between calls: an incomplete chunk and incomplete messages."""
        return len(self._buffer) + sum(len(s.partial or b"") for s in self._streams.values())

    @property
    def max_buffered(self) -> int:
        """The most ``buffered`` can be after any call, whatever the peer sends."""
        return self.max_streams * self.max_message_size + self.max_chunk_size + MAX_HEADER

    def feed(self, data: bytes) -> list[Message]:
        """Every message completed by ``data``; raises ChunkError on a broken stream.

        Messages completed before the break are still returned (the error is
        kept in ``error`` and raised by the next call), so a valid ``connect``
        followed by garbage in the same segment is not lost.
        """
        if self.error is not None:
            raise ChunkError(*self.error.args)
        self._buffer += data
        messages: list[Message] = []
        pos = 0
        try:
            while True:
                consumed, message = self._chunk(pos)
                if consumed == 0:
                    break
                pos += consumed
                if message is not None:
                    self._control(message)  # a bad control message is not handed on
                    messages.append(message)
        except ChunkError as exc:
            self.error = ChunkError(*exc.args)  # (see __init__)
            self._buffer.clear()  # nothing more will be read from a broken stream
            self._streams.clear()
            if not messages:
                raise
            return messages
        del self._buffer[:pos]
        return messages

    def _chunk(self, pos: int) -> tuple[int, Message | None]:
        """Parse one chunk at ``pos``: (bytes used, message if it completed); 0 if incomplete."""
        buf = self._buffer
        end = len(buf)
        if pos >= end:
            return 0, None
        first = buf[pos]
        fmt, csid = first >> 6, first & 0x3F
        p = pos + 1
        if csid == 0:
            if p + 1 > end:
                return 0, None
            csid = buf[p] + 64
            p += 1
        elif csid == 1:
            if p + 2 > end:
                return 0, None
            csid = buf[p] + buf[p + 1] * 256 + 64
            p += 2
        header_size = (11, 7, 3, 0)[fmt]
        if p + header_size > end:
            return 0, None
        state = self._streams.get(csid)
        if state is None:
            if fmt != 0:
                raise ChunkError(f"chunk stream {csid} starts with a type {fmt} header")
            if len(self._streams) >= self.max_streams:
                raise ChunkError(f"more than {self.max_streams} chunk streams")
            state = _StreamState()
        starting = state.partial is None
        if fmt == 3:
            extended = state.extended
            ts_field = 0
        else:
            ts_field = int.from_bytes(buf[p:p + 3], "big")
            extended = ts_field == EXTENDED
        if fmt in (0, 1):
            length = int.from_bytes(buf[p + 3:p + 6], "big")
            type_id = buf[p + 6]
        else:
            length, type_id = state.length, state.type_id
        stream_id = _U32LE.unpack_from(buf, p + 7)[0] if fmt == 0 else state.stream_id
        p += header_size
        ext_value = 0
        if extended:
            if p + 4 > end:
                return 0, None
            ext_value = _U32.unpack_from(buf, p)[0]
            p += 4
        if fmt in (0, 1) and not starting:
            raise ChunkError(f"new message header on chunk stream {csid} mid-message")
        if length > self.max_message_size:
            raise ChunkError(f"message of {length} bytes exceeds the {self.max_message_size} cap")
        have = 0 if starting else len(state.partial or b"")
        take = min(self.chunk_size, length - have)
        if p + take > end:
            return 0, None

        # The whole chunk is here: commit header state, then payload.
        self._streams[csid] = state
        if starting:
            value = ext_value if extended else ts_field
            if fmt == 0:
                state.timestamp, state.delta = value, 0
            elif fmt in (1, 2):
                state.delta = value
                state.timestamp = (state.timestamp + value) & 0xFFFFFFFF
            else:  # type 3 starting a message: same delta again
                state.timestamp = (state.timestamp + state.delta) & 0xFFFFFFFF
            state.length, state.type_id, state.stream_id = length, type_id, stream_id
            state.extended = extended
            state.partial = bytearray()
        assert state.partial is not None
        state.partial += buf[p:p + take]
        p += take
        if len(state.partial) < state.length:
            return p - pos, None
        payload, state.partial = bytes(state.partial), None
        return p - pos, Message(state.type_id, payload, state.stream_id, state.timestamp, csid)

    def _control(self, message: Message) -> None:
        if message.type_id == SET_CHUNK_SIZE:
            if len(message.payload) < 4:
                raise ChunkError("short Set Chunk Size")
            size = _U32.unpack_from(message.payload)[0] & 0x7FFFFFFF
            if not max(1, self.min_chunk_size) <= size <= self.max_chunk_size:
                raise ChunkError(f"chunk size {size} outside "
                                 f"{max(1, self.min_chunk_size)}..{self.max_chunk_size}")
            self.chunk_size = size
        elif message.type_id == ABORT:
            if len(message.payload) < 4:
                raise ChunkError("short Abort")
            state = self._streams.get(_U32.unpack_from(message.payload)[0])
            if state is not None:
                state.partial = None


class ChunkEncoder:
    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE

    def encode(self, message: Message) -> bytes:
        """One message: a type 0 chunk, then type 3 continuation chunks."""
        csid = message.csid
        if not 2 <= csid <= 65599:
            raise ValueError(f"chunk stream id {csid} out of range")
        if csid < 64:
            basic = [bytes((csid,)), bytes((0xC0 | csid,))]
        elif csid < 320:
            basic = [bytes((0, csid - 64)), bytes((0xC0, csid - 64))]
        else:
            rest = csid - 64
            basic = [bytes((1, rest & 0xFF, rest >> 8)), bytes((0xC1, rest & 0xFF, rest >> 8))]
        ts = message.timestamp & 0xFFFFFFFF
        extended = ts >= EXTENDED
        ext = _U32.pack(ts) if extended else b""
        header = ((EXTENDED if extended else ts).to_bytes(3, "big")
                  + len(message.payload).to_bytes(3, "big") + bytes((message.type_id,))
                  + _U32LE.pack(message.stream_id))
        out = bytearray(basic[0] + header + ext)
        payload = message.payload
        out += payload[:self.chunk_size]
        for offset in range(self.chunk_size, len(payload), self.chunk_size):
            out += basic[1] + ext + payload[offset:offset + self.chunk_size]
        return bytes(out)

    def set_chunk_size(self, size: int) -> bytes:
        """The Set Chunk Size message; the new size applies to what is encoded after it."""
        if not 1 <= size <= MAX_CHUNK_SIZE_LIMIT:
            raise ValueError("chunk size out of range")
        data = self.encode(Message(SET_CHUNK_SIZE, _U32.pack(size), csid=PROTOCOL_CSID))
        self.chunk_size = size
        return data


def control(type_id: int, payload: bytes) -> Message:
    return Message(type_id, payload, 0, 0, PROTOCOL_CSID)


def window_ack_size(size: int) -> Message:
    return control(WINDOW_ACK_SIZE, _U32.pack(size))


def set_peer_bandwidth(size: int, limit_type: int = 2) -> Message:
    return control(SET_PEER_BANDWIDTH, _U32.pack(size) + bytes((limit_type,)))


def acknowledgement(sequence: int) -> Message:
    return control(ACKNOWLEDGEMENT, _U32.pack(sequence & 0xFFFFFFFF))
