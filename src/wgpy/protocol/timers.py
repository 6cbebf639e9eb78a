"""The per-peer timer state machine, as deadlines rather than callbacks.

Theory of operation: the same five timers as the kernel's timers.c and
wireguard-go's timers.go (retransmit handshake, send keepalive, new
handshake, zero key material, persistent keepalive), each a deadline or
None.  The peer calls an ``on_*`` hook when an event happens; ``due(now)``
pops the timers that expired so the peer can act on them.  Nothing here
sends anything: the hooks only move deadlines.  ``schedule`` tells the
device about a new deadline so it can keep one timer for all peers.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from wgpy.protocol.constants import (
    KEEPALIVE_TIMEOUT,
    REJECT_AFTER_TIME,
    REKEY_TIMEOUT,
)


class TimerKind(enum.IntEnum):
    RETRANSMIT_HANDSHAKE = 0
    SEND_KEEPALIVE = 1
    NEW_HANDSHAKE = 2
    ZERO_KEY_MATERIAL = 3
    PERSISTENT_KEEPALIVE = 4


_SEND_KEEPALIVE = int(TimerKind.SEND_KEEPALIVE)
_NEW_HANDSHAKE = int(TimerKind.NEW_HANDSHAKE)


class PeerTimers:
    __slots__ = (
        "_deadlines",
        "_schedule",
        "_jitter",
        "handshake_attempts",
        "need_another_keepalive",
        "sent_last_minute_handshake",
        "persistent_keepalive_interval",
    )

    def __init__(self, schedule: Callable[[float], None], jitter: Callable[[], float]) -> None:
        self._deadlines: list[float | None] = [None] * len(TimerKind)
        self._schedule = schedule
        self._jitter = jitter
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.sent_last_minute_handshake = False
        self.persistent_keepalive_interval = 0

    # -- primitives ------------------------------------------------------
    def _mod(self, kind: TimerKind, when: float) -> None:
        self._deadlines[kind] = when
        self._schedule(when)

    def stop(self, kind: TimerKind) -> None:
        """Disarm one timer."""
        self._deadlines[kind] = None

    def pending(self, kind: TimerKind) -> bool:
        return self._deadlines[kind] is not None

    def deadline(self, kind: TimerKind) -> float | None:
        return self._deadlines[kind]

    def next_deadline(self) -> float | None:
        live = [d for d in self._deadlines if d is not None]
        return min(live) if live else None

    def due(self, now: float) -> list[TimerKind]:
        """Pop and return the timers whose deadline has passed, in kind order."""
        fired = []
        for kind in TimerKind:
            d = self._deadlines[kind]
            if d is not None and d <= now:
                self._deadlines[kind] = None
                fired.append(kind)
        return fired

    def stop_all(self) -> None:
        self._deadlines = [None] * len(TimerKind)

    # -- event hooks -----------------------------------------------------
    # The batch data path calls one combined hook per peer and batch: each
    # Python call is costly when a packet wakes a cold process.
    def on_data_batch_sent(self, now: float) -> None:
        """``on_any_authenticated_packet_traversal``, ``..._sent`` and ``on_data_sent``."""
        d = self._deadlines
        if self.persistent_keepalive_interval > 0:
            self._mod(TimerKind.PERSISTENT_KEEPALIVE, now + self.persistent_keepalive_interval)
        d[_SEND_KEEPALIVE] = None
        if d[_NEW_HANDSHAKE] is None:
            delay = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()
            self._mod(TimerKind.NEW_HANDSHAKE, now + delay)

    def on_data_batch_received(self, now: float, data_packets: int) -> None:
        """``on_any_authenticated_packet_traversal``, ``..._received`` and, per data
        (not keepalive) packet, timers.c's data-received hook (arm the passive
        keepalive, or note that another is due): two calls of it have the
        effect of any larger number (it arms once, then only flags)."""
        d = self._deadlines
        if self.persistent_keepalive_interval > 0:
            self._mod(TimerKind.PERSISTENT_KEEPALIVE, now + self.persistent_keepalive_interval)
        d[_NEW_HANDSHAKE] = None
        if data_packets:
            if d[_SEND_KEEPALIVE] is None:
                self._mod(TimerKind.SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)
                if data_packets > 1:
                    self.need_another_keepalive = True
            else:
                self.need_another_keepalive = True

    def on_data_sent(self, now: float) -> None:
        """Call after sending a data packet (not a keepalive)."""
        if not self.pending(TimerKind.NEW_HANDSHAKE):
            delay = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()
            self._mod(TimerKind.NEW_HANDSHAKE, now + delay)

    def on_any_authenticated_packet_sent(self, now: float) -> None:
        """Call after sending any authenticated packet: data, keepalive or handshake."""
        self.stop(TimerKind.SEND_KEEPALIVE)

    def on_any_authenticated_packet_received(self, now: float) -> None:
        """Call after receiving any authenticated packet: data, keepalive or handshake."""
        self.stop(TimerKind.NEW_HANDSHAKE)

    def on_any_authenticated_packet_traversal(self, now: float) -> None:
        """Call after any authenticated packet is sent or received."""
        if self.persistent_keepalive_interval > 0:
            self._mod(TimerKind.PERSISTENT_KEEPALIVE, now + self.persistent_keepalive_interval)

    def on_handshake_initiated(self, now: float) -> None:
        """Call after sending a handshake initiation."""
        self._mod(TimerKind.RETRANSMIT_HANDSHAKE, now + REKEY_TIMEOUT + self._jitter())

    def on_handshake_complete(self, now: float) -> None:
        """Call after a handshake response is received, or the responder's keypair confirmed."""
        self.stop(TimerKind.RETRANSMIT_HANDSHAKE)
        self.handshake_attempts = 0
        self.sent_last_minute_handshake = False

    def on_session_derived(self, now: float) -> None:
        """Call after a new keypair is derived from a handshake."""
        self._mod(TimerKind.ZERO_KEY_MATERIAL, now + REJECT_AFTER_TIME * 3)

    def on_gave_up(self, now: float) -> None:
        """Call after giving up on a handshake: stop keepalives, erase keys later."""
        self.stop(TimerKind.SEND_KEEPALIVE)
        if not self.pending(TimerKind.ZERO_KEY_MATERIAL):
            self._mod(TimerKind.ZERO_KEY_MATERIAL, now + REJECT_AFTER_TIME * 3)

    def on_keepalive_sent_by_timer(self, now: float) -> None:
        """Call after the passive keepalive fired: re-arm if more data arrived meanwhile."""
        if self.need_another_keepalive:
            self.need_another_keepalive = False
            self._mod(TimerKind.SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)
