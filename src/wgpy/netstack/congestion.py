"""Congestion control: NewReno (RFC 5681, with RFC 6582's fast recovery).

The connection tells the controller what happened (bytes newly
acknowledged, a duplicate ACK, a retransmission timeout) and asks it how
much may be in flight (``cwnd``).  Fast retransmit and the choice of what
to retransmit stay in the connection; this module holds only the
arithmetic of the window.

Slow start grows the window by the bytes each ACK newly acknowledges
(RFC 3465's byte counting without its L limit, as Linux counts packets):
a receiver that acknowledges a whole batch at once, as this stack and
GRO receivers do, would otherwise slow the sender down.
"""

from __future__ import annotations

from typing import Final

INITIAL_WINDOW_SEGMENTS: Final = 10  # RFC 6928
DUPACK_THRESHOLD: Final = 3  # RFC 5681 3.2


class NewReno:
    """cwnd and ssthresh in bytes, and the fast-recovery state of RFC 6582."""

    __slots__ = ("mss", "cwnd", "ssthresh", "in_recovery", "recover", "_acc")

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = INITIAL_WINDOW_SEGMENTS * mss
        self.ssthresh = 1 << 30  # "arbitrarily high" (RFC 5681 3.1)
        self.in_recovery = False
        self.recover = -1  # the highest sequence sent when recovery (or a timeout) began
        self._acc = 0  # congestion avoidance: bytes acknowledged toward the next MSS

    def on_ack(self, acked: int, ack: int, flight: int) -> bool:
        """``acked`` new bytes were acknowledged up to ``ack``, leaving ``flight``
        in flight.  Returns True for a partial ACK in recovery (RFC 6582 3.2
        step 3): the caller retransmits the next unacknowledged segment."""
        if self.in_recovery:
            if ack >= self.recover:
                # Full acknowledgment: deflate (RFC 6582 3.2 step 3, option 1).
                self.in_recovery = False
                self.cwnd = min(self.ssthresh, max(flight, self.mss) + self.mss)
                return False
            # Partial: deflate by what was acked, add back one MSS.
            self.cwnd = max(self.cwnd - acked + self.mss, self.mss)
            return True
        if self.cwnd < self.ssthresh:
            self.cwnd = min(self.cwnd + acked, max(self.ssthresh, self.cwnd))
        else:
            self._acc += acked
            if self._acc >= self.cwnd:
                self._acc -= self.cwnd
                self.cwnd += self.mss
        return False

    def on_dupack(self, count: int, flight: int, ack: int, highest_sent: int) -> bool:
        """The ``count``-th duplicate ACK of ``ack`` in a row.  Returns True when
        it starts fast retransmit (the caller resends the first unacknowledged
        segment)."""
        if self.in_recovery:
            self.cwnd += self.mss  # inflate (RFC 5681 3.2 step 4)
            return False
        if count != DUPACK_THRESHOLD or ack <= self.recover:
            # RFC 6582 4.1: duplicates that do not cover ``recover`` are echoes of a
            # loss already being repaired, not a new one.
            return False
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh + DUPACK_THRESHOLD * self.mss
        self.in_recovery = True
        self.recover = highest_sent
        return True

    def on_timeout(self, flight: int, highest_sent: int) -> None:
        """The retransmission timer expired (RFC 5681 3.1, eq. 4; RFC 6582 4.2)."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self.in_recovery = False
        self.recover = highest_sent
        self._acc = 0
