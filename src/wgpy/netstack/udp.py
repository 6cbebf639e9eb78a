"""UDP (RFC 768): the datagram format and a bound endpoint's receive queue."""

from __future__ import annotations

import struct
from collections import deque
from typing import Final

from wgpy.netstack.events import Ready
from wgpy.netstack.ip import Buffer, Malformed, Path

UDP_HEADER: Final = struct.Struct("!HHHH")
UDP_HEADER_LEN: Final = UDP_HEADER.size
# Bytes a bound endpoint queues before it drops (Linux's default SO_RCVBUF order).
DEFAULT_QUEUE_BYTES: Final = 1 << 20


def parse(data: memoryview) -> tuple[int, int, memoryview, int]:
    """(source port, destination port, payload, checksum field) of a datagram.
    :raises Malformed: too short or a length that does not fit."""
    if len(data) < UDP_HEADER_LEN:
        raise Malformed("short UDP header")
    sport, dport, length, csum = UDP_HEADER.unpack_from(data)
    if length < UDP_HEADER_LEN or length > len(data):
        raise Malformed("bad UDP length")
    return sport, dport, data[UDP_HEADER_LEN:length], csum


def build(path: Path, sport: int, dport: int, payload: Buffer) -> bytearray:
    """A whole IP packet carrying one UDP datagram, checksums filled in."""
    n = UDP_HEADER_LEN + len(payload)
    hlen = path.header_len
    buf = path.packet(n)
    UDP_HEADER.pack_into(buf, hlen, sport, dport, n, 0)
    buf[hlen + UDP_HEADER_LEN :] = payload
    value = path.transport_checksum(memoryview(buf)[hlen:])
    # A computed 0 is sent as all ones (RFC 768; 0 means "no checksum" in IPv4).
    struct.pack_into("!H", buf, hlen + 6, value or 0xFFFF)
    return buf


class UdpEndpoint:
    """A bound UDP port: what arrived for it, in order, until read."""

    def __init__(self, local: bytes | None, port: int, queue_bytes: int = DEFAULT_QUEUE_BYTES
                 ) -> None:
        self.local = local  # None: every address of the stack
        self.port = port
        self.queue: deque[tuple[bytes, bytes, int]] = deque()  # (data, source address, port)
        self.queued = 0
        self.queue_bytes = queue_bytes
        self.dropped = 0  # datagrams dropped because the queue was full
        self.error: int | None = None  # an ICMP error about something it sent
        self.events = Ready.NONE
        self.closed = False
        self.user: object = None

    def deliver(self, data: bytes, source: bytes, sport: int) -> bool:
        if self.queued + len(data) > self.queue_bytes:
            self.dropped += 1
            return False
        self.queue.append((data, source, sport))
        self.queued += len(data)
        self.events |= Ready.DATAGRAM
        return True

    def take(self) -> tuple[bytes, bytes, int] | None:
        if not self.queue:
            return None
        item = self.queue.popleft()
        self.queued -= len(item[0])
        return item
