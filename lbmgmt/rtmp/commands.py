"""AMF0 command messages (``connect``, ``_result``, ``_error``, ``onStatus``...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lbmgmt.rtmp import amf0
from lbmgmt.rtmp.chunks import COMMAND_AMF0, COMMAND_AMF3, COMMAND_CSID, Message


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    transaction_id: float
    command_object: Any = None
    args: list[Any] = field(default_factory=list)
    stream_id: int = 0


class CommandError(ValueError):
    pass


def parse_command(message: Message) -> Command:
    """The command in an AMF0 (type 20) or AMF3-envelope (type 17) command message."""
    payload = message.payload
    if message.type_id == COMMAND_AMF3:
        # AMF3 clients send an AMF0 body after one format byte (0); AMF3 values inside
        # (the 0x11 switch marker) are not supported and fail as unsupported AMF0.
        payload = payload[1:]
    try:
        values = amf0.decode_all(payload)
    except amf0.AMF0Error as exc:
        raise CommandError(f"bad AMF0 in command: {exc}") from None
    if len(values) < 2 or not isinstance(values[0], str) or not isinstance(values[1], float):
        raise CommandError("a command starts with a name and a transaction id")
    return Command(values[0], values[1], values[2] if len(values) > 2 else None,
                   values[3:], message.stream_id)


def command_message(name: str, transaction_id: float, command_object: Any, *args: Any,
                    stream_id: int = 0) -> Message:
    return Message(COMMAND_AMF0, amf0.encode(name, transaction_id, command_object, *args),
                   stream_id, 0, COMMAND_CSID)


def status(level: str, code: str, description: str, **extra: Any) -> dict[str, Any]:
    """An info object, as in NetConnection/NetStream status events."""
    info: dict[str, Any] = {"level": level, "code": code, "description": description}
    info.update(extra)
    return info
