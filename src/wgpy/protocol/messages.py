"""The four WireGuard message formats, defined once.

Every layout is a ``struct.Struct`` with named fields in a frozen dataclass;
nothing else in the package slices message bytes.  ``parse()`` turns a
datagram into one of the dataclasses, or ``None`` for anything of a wrong
type or length (dropped silently by the caller).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from wgpy.protocol.constants import PADDING_MULTIPLE, TAG_LEN

MESSAGE_INITIATION: Final = 1
MESSAGE_RESPONSE: Final = 2
MESSAGE_COOKIE_REPLY: Final = 3
MESSAGE_TRANSPORT: Final = 4

_INITIATION = struct.Struct("<I I 32s 48s 28s 16s 16s")
_RESPONSE = struct.Struct("<I I I 32s 16s 16s 16s")
_COOKIE_REPLY = struct.Struct("<I I 24s 32s")
TRANSPORT_HEADER = struct.Struct("<I I Q")  # type, receiver, counter

INITIATION_SIZE: Final = 148
RESPONSE_SIZE: Final = 92
COOKIE_REPLY_SIZE: Final = 64
TRANSPORT_HEADER_SIZE: Final = 16
# A keepalive is exactly this: a header and the tag of an empty plaintext.
TRANSPORT_MIN_SIZE: Final = TRANSPORT_HEADER_SIZE + TAG_LEN
assert _INITIATION.size == INITIATION_SIZE
assert _RESPONSE.size == RESPONSE_SIZE
assert _COOKIE_REPLY.size == COOKIE_REPLY_SIZE
assert TRANSPORT_HEADER.size == TRANSPORT_HEADER_SIZE

# Offsets of mac1/mac2: they cover everything before them.
INITIATION_MAC1_OFFSET: Final = 116
INITIATION_MAC2_OFFSET: Final = 132
RESPONSE_MAC1_OFFSET: Final = 60
RESPONSE_MAC2_OFFSET: Final = 76


@dataclass(frozen=True, slots=True)
class Initiation:
    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def pack(self) -> bytes:
        return _INITIATION.pack(
            MESSAGE_INITIATION,
            self.sender,
            self.ephemeral,
            self.encrypted_static,
            self.encrypted_timestamp,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Initiation:
        _, sender, eph, st, ts, m1, m2 = _INITIATION.unpack(data)
        return cls(sender, eph, st, ts, m1, m2)


@dataclass(frozen=True, slots=True)
class Response:
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    def pack(self) -> bytes:
        return _RESPONSE.pack(
            MESSAGE_RESPONSE,
            self.sender,
            self.receiver,
            self.ephemeral,
            self.encrypted_nothing,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Response:
        _, sender, receiver, eph, empty, m1, m2 = _RESPONSE.unpack(data)
        return cls(sender, receiver, eph, empty, m1, m2)


@dataclass(frozen=True, slots=True)
class CookieReply:
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    def pack(self) -> bytes:
        return _COOKIE_REPLY.pack(
            MESSAGE_COOKIE_REPLY, self.receiver, self.nonce, self.encrypted_cookie
        )

    @classmethod
    def unpack(cls, data: bytes) -> CookieReply:
        _, receiver, nonce, cookie = _COOKIE_REPLY.unpack(data)
        return cls(receiver, nonce, cookie)


@dataclass(frozen=True, slots=True)
class TransportHeader:
    """The 16-byte header of a transport message; the ciphertext follows it."""

    receiver: int
    counter: int

    @staticmethod
    def pack(receiver: int, counter: int) -> bytes:
        return TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT, receiver, counter)

    @classmethod
    def unpack(cls, data: bytes | memoryview) -> TransportHeader:
        _, receiver, counter = TRANSPORT_HEADER.unpack_from(data, 0)
        return cls(receiver, counter)


def padded_length(size: int, mtu: int) -> int:
    """The length an inner packet of ``size`` bytes is zero-padded to before
    encryption: a multiple of 16, but never past the MTU (wireguard-go's rule;
    an ``mtu`` of 0 means no limit)."""
    last_unit = size
    if mtu == 0:
        return (last_unit + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1)
    if last_unit > mtu:
        last_unit %= mtu
    padded = (last_unit + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1)
    padded = min(padded, mtu)
    return size + (padded - last_unit)


def message_type(data: bytes) -> int:
    """The message type, or 0 when the 4-byte type field is not valid."""
    if len(data) < 4:
        return 0
    t = int.from_bytes(data[:4], "little")
    return t if 1 <= t <= 4 else 0


Message = Initiation | Response | CookieReply | TransportHeader


def parse(data: bytes) -> Message | None:
    """Decode a datagram's header, or None if its type or length is wrong."""
    t = message_type(data)
    n = len(data)
    if t == MESSAGE_TRANSPORT and n >= TRANSPORT_MIN_SIZE:
        return TransportHeader.unpack(data)
    if t == MESSAGE_INITIATION and n == INITIATION_SIZE:
        return Initiation.unpack(data)
    if t == MESSAGE_RESPONSE and n == RESPONSE_SIZE:
        return Response.unpack(data)
    if t == MESSAGE_COOKIE_REPLY and n == COOKIE_REPLY_SIZE:
        return CookieReply.unpack(data)
    return None


def mac1_span(data: bytes) -> tuple[bytes, bytes]:
    """(covered bytes, mac1) of a handshake message (initiation or response)."""
    initiation = message_type(data) == MESSAGE_INITIATION
    off = INITIATION_MAC1_OFFSET if initiation else RESPONSE_MAC1_OFFSET
    return data[:off], data[off : off + TAG_LEN]


def mac2_span(data: bytes) -> tuple[bytes, bytes]:
    """(covered bytes, mac2) of a handshake message (initiation or response)."""
    initiation = message_type(data) == MESSAGE_INITIATION
    off = INITIATION_MAC2_OFFSET if initiation else RESPONSE_MAC2_OFFSET
    return data[:off], data[off : off + TAG_LEN]


def with_macs(data: bytes, mac1: bytes, mac2: bytes) -> bytes:
    """The message with its two trailing MAC fields replaced."""
    return data[:-32] + mac1 + mac2
