"""TAI64N timestamps for handshake initiations, from an injected wall clock."""

from __future__ import annotations

import struct

_TAI64N = struct.Struct(">QI")
_BASE = 0x400000000000000A  # 2^62 + 10: TAI is ten seconds ahead of UTC here, as in wireguard-go
# wireguard-go whitens the nanoseconds so a timestamp leaks no fine clock.
_WHITENER = 0x1000000


def tai64n(wall: float) -> bytes:
    """The 12-byte TAI64N label for Unix time ``wall`` (seconds)."""
    secs = int(wall)
    nanos = int((wall - secs) * 1e9)
    nanos -= nanos % _WHITENER
    return _TAI64N.pack(_BASE + secs, nanos)


def after(a: bytes, b: bytes) -> bool:
    """Whether timestamp ``a`` is strictly later than ``b`` (big-endian compare)."""
    return a > b
