"""Just enough of IPv4/IPv6 headers for routing: version, addresses, length."""

from __future__ import annotations

from typing import Final

IPV4_HEADER_MIN: Final = 20
IPV6_HEADER_LEN: Final = 40


def version(packet: bytes | bytearray | memoryview) -> int:
    return packet[0] >> 4 if packet else 0


def destination(packet: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(family bits 32|128, destination address as int), or None if not IP."""
    v = packet[0] >> 4 if packet else 0
    if v == 4 and len(packet) >= IPV4_HEADER_MIN:
        return 32, int.from_bytes(packet[16:20], "big")
    if v == 6 and len(packet) >= IPV6_HEADER_LEN:
        return 128, int.from_bytes(packet[24:40], "big")
    return None


def source_and_length(packet: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """(family bits, source address as int, total length from the header), or None."""
    v = packet[0] >> 4 if packet else 0
    if v == 4 and len(packet) >= IPV4_HEADER_MIN:
        return 32, int.from_bytes(packet[12:16], "big"), int.from_bytes(packet[2:4], "big")
    if v == 6 and len(packet) >= IPV6_HEADER_LEN:
        return (
            128,
            int.from_bytes(packet[8:24], "big"),
            IPV6_HEADER_LEN + int.from_bytes(packet[4:6], "big"),
        )
    return None
