"""Mumble's control-channel wire format, the part a text bot needs.

A frame on the TLS control connection is a big-endian 2-byte message type, a big-endian
4-byte body length and a protobuf body (Mumble.proto, proto2). The messages used here have a
handful of scalar fields, so the protobuf encoding is done by hand: varints (wire type 0) and
length-delimited values (wire type 2); 32- and 64-bit fixed values (types 5 and 1) are skipped
on decode. Repeated scalar fields are encoded unpacked (proto2's default, what Mumble sends)
and accepted packed or unpacked.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Mapping

import anyio
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream

#: Frame header: message type, body length.
HEADER = struct.Struct(">HI")
#: Largest body accepted (Mumble's own limit is 8 MiB).
MAX_BODY = 8 * 1024 * 1024


class MessageType(enum.IntEnum):
    VERSION = 0
    UDP_TUNNEL = 1
    AUTHENTICATE = 2
    PING = 3
    REJECT = 4
    SERVER_SYNC = 5
    CHANNEL_REMOVE = 6
    CHANNEL_STATE = 7
    USER_REMOVE = 8
    USER_STATE = 9
    TEXT_MESSAGE = 11
    PERMISSION_DENIED = 12
    CRYPT_SETUP = 15
    CODEC_VERSION = 21
    SERVER_CONFIG = 24


class ProtocolError(ValueError):
    """Bytes that are not a valid Mumble frame or protobuf body."""


# Field numbers (Mumble.proto) of the messages used.
class Version(enum.IntEnum):
    VERSION = 1
    RELEASE = 2
    OS = 3
    OS_VERSION = 4


class Authenticate(enum.IntEnum):
    USERNAME = 1
    PASSWORD = 2
    OPUS = 5
    CLIENT_TYPE = 6


class Ping(enum.IntEnum):
    TIMESTAMP = 1


class Reject(enum.IntEnum):
    TYPE = 1
    REASON = 2


class ServerSync(enum.IntEnum):
    SESSION = 1
    WELCOME_TEXT = 3


class ChannelState(enum.IntEnum):
    CHANNEL_ID = 1
    PARENT = 2
    NAME = 3


class ChannelRemove(enum.IntEnum):
    CHANNEL_ID = 1


class UserState(enum.IntEnum):
    SESSION = 1
    ACTOR = 2
    NAME = 3
    USER_ID = 4
    CHANNEL_ID = 5


class UserRemove(enum.IntEnum):
    SESSION = 1
    REASON = 3


class TextMessage(enum.IntEnum):
    ACTOR = 1
    SESSION = 2
    CHANNEL_ID = 3
    TREE_ID = 4
    MESSAGE = 5


class PermissionDenied(enum.IntEnum):
    PERMISSION = 1
    CHANNEL_ID = 2
    SESSION = 3
    REASON = 4
    TYPE = 5
    NAME = 6


class ServerConfig(enum.IntEnum):
    MESSAGE_LENGTH = 4


#: Reject.type names (Mumble.proto ``Reject.RejectType``).
REJECT_TYPES = {
    0: "none",
    1: "wrong version",
    2: "invalid username",
    3: "wrong user password",
    4: "wrong server password",
    5: "username in use",
    6: "server full",
    7: "no certificate",
    8: "authenticator failure",
}

#: PermissionDenied.type names (Mumble.proto ``PermissionDenied.DenyType``).
DENY_TYPES = {
    0: "text",
    1: "permission",
    2: "superuser",
    3: "channel name",
    4: "text too long",
    5: "H9K",
    6: "temporary channel",
    7: "missing certificate",
    8: "user name",
    9: "channel full",
    10: "nesting limit",
    11: "channel count limit",
    12: "channel listener limit",
    13: "user listener limit",
}

Value = int | bool | str | bytes


# -- varints ------------------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative numbers as their 64-bit two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a varint at ``pos``; return it and the position after it."""
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ProtocolError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtocolError("varint too long")


# -- messages -----------------------------------------------------------------------------------


def encode(fields: Iterable[tuple[int, Value | Iterable[int]]]) -> bytes:
    """Encode ``(field number, value)`` pairs; a list of ints is a repeated field (unpacked).

    ints and bools are varints, str (UTF-8) and bytes are length-delimited.
    """
    out = bytearray()
    for number, value in fields:
        values: Iterable[Value] = (
            [value] if isinstance(value, int | bool | str | bytes) else list(value)
        )
        for item in values:
            if isinstance(item, bool | int):
                out += encode_varint(number << 3 | 0)
                out += encode_varint(int(item))
            else:
                raw = item.encode("utf-8") if isinstance(item, str) else item
                out += encode_varint(number << 3 | 2)
                out += encode_varint(len(raw))
                out += raw
    return bytes(out)


class Message:
    """A decoded protobuf body: field number → the values seen, in order."""

    def __init__(self, values: Mapping[int, list[int | bytes]]) -> None:
        self.values = values

    def __repr__(self) -> str:
        return f"Message({dict(self.values)!r})"

    def __contains__(self, number: int) -> bool:
        return number in self.values

    def integer(self, number: int, default: int | None = None) -> int | None:
        found = self.integers(number)
        return found[-1] if found else default

    def integers(self, number: int) -> list[int]:
        """A repeated varint field, whether sent packed or unpacked."""
        out: list[int] = []
        for value in self.values.get(number, ()):
            if isinstance(value, int):
                out.append(value)
            else:
                pos = 0
                while pos < len(value):
                    item, pos = decode_varint(value, pos)
                    out.append(item)
        return out

    def text(self, number: int, default: str = "") -> str:
        for value in reversed(self.values.get(number, ())):
            if isinstance(value, bytes):
                return value.decode("utf-8", errors="replace")
        return default

    def flag(self, number: int, default: bool = False) -> bool:
        value = self.integer(number)
        return default if value is None else bool(value)


def decode(data: bytes) -> Message:
    """Decode a protobuf body; unknown wire types raise :class:`ProtocolError`."""
    values: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(data):
        key, pos = decode_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtocolError("field number 0")
        value: int | bytes | None
        if wire == 0:
            value, pos = decode_varint(data, pos)
        elif wire == 2:
            length, pos = decode_varint(data, pos)
            if pos + length > len(data):
                raise ProtocolError("truncated length-delimited field")
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ProtocolError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ProtocolError("truncated fixed-width field")
        if value is not None:
            values.setdefault(number, []).append(value)
    return Message(values)


def frame(kind: int, body: bytes) -> bytes:
    """One control-channel frame."""
    return HEADER.pack(kind, len(body)) + body


def parse_header(header: bytes) -> tuple[int, int]:
    """The message type and body length of a 6-byte frame header."""
    kind, length = HEADER.unpack(header)
    if length > MAX_BODY:
        raise ProtocolError(f"frame of {length} bytes is over the {MAX_BODY}-byte limit")
    return kind, length


def version_number(major: int, minor: int, patch: int) -> int:
    """The legacy 32-bit version field: 0xMMMMmmpp."""
    return (major << 16) | (minor << 8) | patch


class FrameStream:
    """Frames over an established (TLS) byte stream: one writer at a time, one reader."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self._reader = BufferedByteReceiveStream(stream)
        self._write_lock = anyio.Lock()

    async def send(self, kind: int, fields: Iterable[tuple[int, Value | Iterable[int]]]) -> None:
        data = frame(kind, encode(fields))
        async with self._write_lock:
            await self.stream.send(data)

    async def receive(self) -> tuple[int, Message]:
        """The next frame's type and decoded body (``UDPTunnel`` bodies come back empty)."""
        kind, length = parse_header(await self._reader.receive_exactly(HEADER.size))
        body = await self._reader.receive_exactly(length) if length else b""
        if kind == MessageType.UDP_TUNNEL:
            return kind, Message({})
        return kind, decode(body)

    async def aclose(self) -> None:
        await self.stream.aclose()
