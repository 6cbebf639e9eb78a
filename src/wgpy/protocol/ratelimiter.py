"""Per-source token buckets for handshakes under load.

Theory of operation: as wireguard-go's ratelimiter, each source earns
RATELIMIT_PACKETS_PER_SECOND tokens per second up to a burst of
RATELIMIT_BURST.  IPv4 sources are keyed by address, IPv6 by /64 (one
customer usually owns a /64).  Entries idle for a second are forgotten, and
the table is bounded: when it is full, new sources are refused until entries
age out, so a spoofing flood cannot grow memory without bound.
"""

from __future__ import annotations

from wgpy.protocol.constants import (
    RATELIMIT_BURST,
    RATELIMIT_PACKETS_PER_SECOND,
    RATELIMIT_TABLE_MAX,
)

_PACKET_COST = 1.0 / RATELIMIT_PACKETS_PER_SECOND
_MAX_TOKENS = _PACKET_COST * RATELIMIT_BURST
_GC_INTERVAL = 1.0


def source_key(address: bytes) -> bytes:
    """The rate-limiting key for a packed source address (IPv6 grouped by /64)."""
    return address[:8] if len(address) == 16 else address


class RateLimiter:
    def __init__(self, max_entries: int = RATELIMIT_TABLE_MAX) -> None:
        self.max_entries = max_entries
        # key -> [tokens (seconds of credit), last update time]
        self._table: dict[bytes, list[float]] = {}
        self._last_gc = 0.0

    def allow(self, address: bytes, now: float) -> bool:
        """Charge one handshake to ``address`` (packed IP); False if over budget."""
        if now - self._last_gc >= _GC_INTERVAL:
            self._gc(now)
        key = source_key(address)
        entry = self._table.get(key)
        if entry is None:
            if len(self._table) >= self.max_entries:
                return False
            self._table[key] = [_MAX_TOKENS - _PACKET_COST, now]
            return True
        tokens = min(_MAX_TOKENS, entry[0] + (now - entry[1]))
        entry[1] = now
        if tokens >= _PACKET_COST:
            entry[0] = tokens - _PACKET_COST
            return True
        entry[0] = tokens
        return False

    def _gc(self, now: float) -> None:
        self._last_gc = now
        stale = [k for k, (_, t) in self._table.items() if now - t > _GC_INTERVAL]
        for k in stale:
            del self._table[k]

    def __len__(self) -> int:
        return len(self._table)
