"""Congestion control: NewReno's window (RFC 5681, RFC 6582) under RFC 6675's
loss recovery.

The connection tells the controller what happened (bytes newly
acknowledged, a loss found, a retransmission timeout) and asks it how
much may be in flight (``cwnd``).  Finding losses and choosing what to
retransmit is ``recovery``'s; this module holds only the arithmetic of the
window.  In recovery the window is not inflated by duplicate ACKs: the
connection compares it with the pipe (RFC 6675), which already leaves out
what the receiver holds and what was lost.

Slow start grows the window by the bytes each ACK newly acknowledges
(RFC 3465's byte counting without its L limit, as Linux counts packets):
a receiver that acknowledges a whole batch at once, as this stack and
GRO receivers do, would otherwise slow the sender down.
"""

from __future__ import annotations

from typing import Final

INITIAL_WINDOW_SEGMENTS: Final = 10  # RFC 6928


class NewReno:
    """cwnd and ssthresh in bytes, and the fast-recovery state of RFC 6582."""

    __slots__ = ("mss", "cwnd", "ssthresh", "in_recovery", "recover", "_acc", "_prior")

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = INITIAL_WINDOW_SEGMENTS * mss
        self.ssthresh = 1 << 30  # "arbitrarily high" (RFC 5681 3.1)
        self.in_recovery = False
        self.recover = -1  # the highest sequence sent when recovery (or a timeout) began
        self._acc = 0  # congestion avoidance: bytes acknowledged toward the next MSS
        self._prior = (self.cwnd, self.ssthresh)  # before the last reduction

    def on_ack(self, acked: int, ack: int, flight: int) -> bool:
        """``acked`` new bytes were acknowledged up to ``ack``, leaving ``flight``
        in flight.  Returns True for a partial ACK in recovery (RFC 6582 3.2
        step 3: without SACK, the next unacknowledged segment is lost too)."""
        if self.in_recovery:
            if ack >= self.recover:
                # Full acknowledgment (RFC 6582 3.2 step 3, option 1: no burst).
                self.in_recovery = False
                self.cwnd = min(self.ssthresh, max(flight, self.mss) + self.mss)
                return False
            return True
        if self.cwnd < self.ssthresh:
            self.cwnd = min(self.cwnd + acked, max(self.ssthresh, self.cwnd))
        else:
            self._acc += acked
            if self._acc >= self.cwnd:
                self._acc -= self.cwnd
                self.cwnd += self.mss
        return False

    def may_recover(self, una: int) -> bool:
        """A loss found now starts a new recovery: none is running, and the
        losses of the last one (or of a timeout) are all repaired (RFC 6582 4.1)."""
        return not self.in_recovery and una >= self.recover

    def in_loss_episode(self, una: int) -> bool:
        """Recovering, from a fast retransmit or a timeout (RFC 8985's "in
        recovery")."""
        return self.in_recovery or una < self.recover

    def on_loss(self, flight: int, highest_sent: int) -> None:
        """Enter fast recovery (RFC 6675 5 step 4.2): half the flight, once."""
        self._prior = (self.cwnd, self.ssthresh)
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh
        self.in_recovery = True
        self.recover = highest_sent
        self._acc = 0

    def undo(self) -> None:
        """The recovery was for a loss that was not (every retransmission reached
        the receiver twice): end it, and restore the window as it was."""
        cwnd, ssthresh = self._prior
        self.cwnd = max(self.cwnd, cwnd)
        self.ssthresh = max(self.ssthresh, ssthresh)
        self.in_recovery = False
        self.recover = -1  # a loss found from now on is a new one

    def on_timeout(self, flight: int, highest_sent: int) -> None:
        """The retransmission timer expired (RFC 5681 3.1, eq. 4; RFC 6582 4.2)."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss
        self.in_recovery = False
        self.recover = highest_sent
        self._acc = 0
