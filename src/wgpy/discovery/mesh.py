"""Which peers ``--mesh`` added, and when they left the registry (sans-IO).

``--mesh`` adds every peer the registry lists that the device lacks.  When
such a peer is no longer listed (its key was removed from the registry, or
it has had no endpoint there for a while), it is removed again, but only
after ``grace`` seconds, so that a registry restart or a short outage does
not tear tunnels down.  Peers that were configured, not added by this
process, are never removed: the book only knows the peers it added.
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_GRACE = 300.0


class MeshBook:
    def __init__(self, grace: float = DEFAULT_GRACE) -> None:
        self.grace = grace
        self.last_listed: dict[bytes, float] = {}  # added by us -> last seen in the registry

    def added(self, key: bytes, now: float) -> None:
        self.last_listed[key] = now

    def listed(self, keys: Iterable[bytes], now: float) -> None:
        """The registry lists ``keys`` now."""
        for key in keys:
            if key in self.last_listed:
                self.last_listed[key] = now

    def vanished(self, now: float) -> list[bytes]:
        """Peers we added that have not been listed for ``grace`` seconds; forgotten
        as they are returned (the caller removes them)."""
        gone = [k for k, t in self.last_listed.items() if now - t >= self.grace]
        for key in gone:
            del self.last_listed[key]
        return gone

    def forget(self, key: bytes) -> None:
        """The peer left the device some other way (``wg set ... remove``)."""
        self.last_listed.pop(key, None)
