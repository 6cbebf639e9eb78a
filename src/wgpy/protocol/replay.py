"""Anti-replay sliding window (RFC 6479 style), as Linux and wireguard-go.

Theory of operation: the window is a ring of 128 64-bit words; one word is
kept as slack so the window proper holds 8128 counters.  ``check`` answers
whether a counter could be new; ``update`` records it and must be called only
after the packet authenticated (an attacker must not move the window).
The ring is a bytearray (mutated in place: no per-packet allocation); words
are cleared when the window slides past them.
"""

from __future__ import annotations

from typing import Final

from wgpy.protocol.constants import REJECT_AFTER_MESSAGES

_WORD_BITS: Final = 64
_RING_WORDS: Final = 128
_RING_BITS: Final = _WORD_BITS * _RING_WORDS
WINDOW_SIZE: Final = _RING_BITS - _WORD_BITS  # 8128
_EMPTY: Final = bytes(_RING_BITS // 8)
_EMPTY_WORD: Final = bytes(8)


class ReplayWindow:
    __slots__ = ("_last", "_ring")

    def __init__(self) -> None:
        # As the kernel's counter.c: position t = counter + 1, and _last is the
        # greatest position seen (0: nothing seen yet).
        self._last = 0
        self._ring = bytearray(_RING_BITS // 8)

    def check(self, counter: int) -> bool:
        """Whether ``counter`` is acceptable (inside or ahead of the window, unseen)."""
        if counter >= REJECT_AFTER_MESSAGES or counter < 0:
            return False
        t = counter + 1
        if WINDOW_SIZE + t < self._last:
            return False
        if t > self._last:
            return True
        pos = t % _RING_BITS
        return not (self._ring[pos >> 3] >> (pos & 7)) & 1

    def update(self, counter: int) -> bool:
        """Record ``counter``; False if it is a replay or too old (nothing changes)."""
        if not self.check(counter):
            return False
        t = counter + 1
        if t > self._last:
            self._advance(t)
            self._last = t
        pos = t % _RING_BITS
        self._ring[pos >> 3] |= 1 << (pos & 7)
        return True

    def _advance(self, t: int) -> None:
        # Clear the ring words the window slides over, as counter.c does.
        current = self._last // _WORD_BITS
        top = min(t // _WORD_BITS - current, _RING_WORDS)
        ring = self._ring
        if top >= _RING_WORDS:
            ring[:] = _EMPTY
            return
        for i in range(1, top + 1):
            start = ((current + i) % _RING_WORDS) * 8
            ring[start : start + 8] = _EMPTY_WORD

    def reset(self) -> None:
        self._last = 0
        self._ring[:] = _EMPTY
