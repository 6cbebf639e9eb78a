"""Loss recovery: what is in flight, what the receiver holds, what was lost.

The sender keeps one record per segment it has sent and not yet seen
cumulatively acknowledged (``Sent``: its sequence range, when it was last
sent, and whether it was SACKed, judged lost, retransmitted).  From them:

* the pipe (RFC 6675 2, counted as Linux counts ``in_flight``): bytes
  outstanding, minus those SACKed, minus those judged lost and not sent
  again.  The connection sends while the pipe is below cwnd;
* what to retransmit: the segments judged lost, lowest first (RFC 6675
  ``NextSeg`` rule 1), each once until it is judged lost again;
* loss detection by time, RACK (RFC 8985 6.2): a segment is lost once a
  segment sent after it has been delivered (cumulatively or by SACK) and a
  reordering window has passed beyond the round trip of that delivery.
  The window is 0 in recovery, and before the path has been seen to
  reorder once DupThresh segments are SACKed (RFC 6675's rule); otherwise
  a quarter of the minimum RTT, grown by each round trip that brings a
  D-SACK (RFC 2883: the receiver got something twice, so we retransmitted
  needlessly), never above SRTT.  What is not lost yet is checked again
  at ``reo_at`` (the reordering timer).  A retransmission that is lost
  is found the same way;
* a peer without SACK: the connection marks the first segment lost on
  the third duplicate ACK and on each partial ACK (NewReno, RFC 6582).

After a retransmission timeout every segment is judged lost and the SACK
marks are forgotten (RFC 2018 8: the receiver may have dropped what it
SACKed); the blocks of the next ACKs mark again what it holds.  Tail loss
probes (RFC 8985 7) are the connection's: it sends one, and what the probe
is acknowledged with lets RACK find the tail's losses.
Sans-IO: the time is an argument.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Final

DUPTHRESH: Final = 3  # RFC 6675 2
REO_PERSIST: Final = 16  # recoveries a grown reordering window outlives (RFC 8985 6.2)
TIMER_SLACK: Final = 1e-6  # a remaining time this small is due: no timer for float dust

SACKED: Final = 1
LOST: Final = 2  # judged lost, and not sent since
RETRANSMITTED: Final = 4  # sent more than once (its RTT samples are ambiguous)
GONE: Final = 8  # cumulatively acknowledged: no longer on the scoreboard


class Sent:
    """One segment on the scoreboard: [start, end) in the connection's unwrapped
    sequence numbers (a FIN counts one), sent last at ``xmit``."""

    __slots__ = ("start", "end", "xmit", "flags")

    def __init__(self, start: int, end: int, xmit: float) -> None:
        self.start = start
        self.end = end
        self.xmit = xmit
        self.flags = 0

    def __repr__(self) -> str:
        return f"Sent({self.start}, {self.end}, {self.xmit}, flags={self.flags})"


class Scoreboard:
    """The segments from SND.UNA to SND.MAX, with RFC 8985's RACK state."""

    __slots__ = ("_segs", "_head", "_flight", "_lost_heap", "_pushed", "sacked", "lost",
                 "sacked_segs", "rack_xmit", "rack_end", "rack_rtt", "min_rtt", "fack", "reord",
                 "reo_mult", "reo_persist", "dsack_round", "reo_at", "dsacks")

    def __init__(self) -> None:
        self._segs: list[Sent] = []  # in sequence order; _head is the first still here
        self._head = 0
        # Segments sent and neither delivered nor judged lost, oldest send first:
        # what RACK examines.  An OrderedDict so a retransmission moves to the end.
        self._flight: OrderedDict[Sent, None] = OrderedDict()
        self._lost_heap: list[tuple[int, int, Sent]] = []  # (start, tiebreak, segment)
        self._pushed = 0
        self.sacked = 0  # bytes SACKed
        self.lost = 0  # bytes judged lost and not retransmitted since
        self.sacked_segs = 0
        self.rack_xmit = float("-inf")  # the last send of the most recently sent delivered segment
        self.rack_end = 0
        self.rack_rtt = 0.0
        self.min_rtt = float("inf")
        self.fack = 0  # the highest end delivered
        self.reord = False  # the path has been seen to reorder
        self.reo_mult = 1
        self.reo_persist = 0
        self.dsack_round: int | None = None
        self.reo_at: float | None = None  # the reordering timer
        self.dsacks = 0  # D-SACK blocks received (for tests and counters)

    def __len__(self) -> int:
        return len(self._segs) - self._head

    def segments(self) -> list[Sent]:
        """The segments on the board, in sequence order."""
        return self._segs[self._head :]

    def pipe(self, outstanding: int) -> int:
        """Bytes believed in the network, of ``outstanding`` (SND.MAX - SND.UNA)."""
        return outstanding - self.sacked - self.lost

    # -- sending -------------------------------------------------------------------
    def sent(self, start: int, end: int, now: float) -> None:
        """New data [start, end) went out (sequence order: above all on the board)."""
        seg = Sent(start, end, now)
        self._segs.append(seg)
        self._flight[seg] = None

    def next_lost(self) -> Sent | None:
        """The lowest segment judged lost and not yet sent again, or None."""
        heap = self._lost_heap
        while heap:
            seg = heap[0][2]
            if seg.flags & (LOST | GONE) == LOST:
                return seg
            heapq.heappop(heap)
        return None

    def retransmitted(self, seg: Sent, now: float) -> None:
        """``seg`` (from ``next_lost``) was sent again."""
        heapq.heappop(self._lost_heap)
        seg.flags &= ~LOST
        self.lost -= seg.end - seg.start
        self.resent(seg, now)

    def resent(self, seg: Sent, now: float) -> None:
        """``seg``, not judged lost, was sent again (a tail loss probe)."""
        seg.flags |= RETRANSMITTED
        seg.xmit = now
        self._flight.pop(seg, None)
        self._flight[seg] = None

    def last(self) -> Sent | None:
        """The highest segment not SACKed, or None."""
        segs = self._segs
        for i in range(len(segs) - 1, self._head - 1, -1):
            if not segs[i].flags & SACKED:
                return segs[i]
        return None

    def mark_lost(self, seg: Sent) -> None:
        if seg.flags & (SACKED | LOST | GONE):
            return
        seg.flags |= LOST
        self.lost += seg.end - seg.start
        self._flight.pop(seg, None)
        self._pushed += 1
        heapq.heappush(self._lost_heap, (seg.start, self._pushed, seg))

    def mark_first_lost(self) -> bool:
        """NewReno's loss (no SACK): the first segment.  False if it already was."""
        if not len(self):
            return False
        seg = self._segs[self._head]
        if seg.flags & (SACKED | LOST):
            return False
        self.mark_lost(seg)
        return True

    def timed_out(self) -> None:
        """The retransmission timer expired: everything is lost, SACKs forgotten."""
        self._flight.clear()
        self._lost_heap = []
        self.sacked = self.sacked_segs = self.lost = 0
        self.reo_at = None
        for seg in self._segs[self._head :]:
            seg.flags &= RETRANSMITTED
            self.mark_lost(seg)

    # -- acknowledgments -----------------------------------------------------------
    def ack(self, una: int, now: float) -> None:
        """Everything below ``una`` was cumulatively acknowledged."""
        segs = self._segs
        i = self._head
        n = len(segs)
        flight = self._flight
        # In order, nothing SACKed: only the last segment acknowledged tells
        # RACK anything (the latest sent, the shortest RTT).
        in_order = not self.sacked_segs and i < n and self.fack <= segs[i].start
        last: Sent | None = None
        while i < n and segs[i].end <= una:
            seg = segs[i]
            if in_order and not seg.flags:
                last = seg
            else:
                if not seg.flags & SACKED:
                    self._delivered(seg, now)
                self._forget(seg)
            flight.pop(seg, None)
            seg.flags |= GONE
            i += 1
        if last is not None:
            self._delivered(last, now)
        if i < n and segs[i].start < una:
            # A partial acknowledgment of a segment: what is left of it stays.
            seg = segs[i]
            cut = una - seg.start
            if seg.flags & SACKED:
                self.sacked -= cut
            elif seg.flags & LOST:
                self.lost -= cut
            seg.start = una
        if i > 4096 and i * 2 > n:
            del segs[:i]
            i = 0
        self._head = i

    def sack(self, blocks: list[tuple[int, int]], una: int, snd_max: int, now: float
             ) -> bool:
        """The SACK blocks of one ACK (unwrapped).  Returns True if the first was a
        D-SACK (RFC 2883 4: below ``una``, or inside the second block)."""
        dsack = bool(blocks) and (blocks[0][1] <= una or (
            len(blocks) > 1 and blocks[1][0] <= blocks[0][0] and blocks[0][1] <= blocks[1][1]))
        for left, right in blocks:
            self._sack_range(max(left, una), min(right, snd_max), now)
        if dsack:
            self.dsacks += 1
        return dsack

    def _sack_range(self, left: int, right: int, now: float) -> None:
        if left >= right:
            return
        segs = self._segs
        i = _first_ending_after(segs, self._head, left)
        n = len(segs)
        while i < n:
            seg = segs[i]
            if seg.start >= right:
                break
            if seg.start >= left and seg.end <= right and not seg.flags & SACKED:
                if seg.flags & LOST:
                    self.lost -= seg.end - seg.start
                    seg.flags &= ~LOST
                seg.flags |= SACKED
                self.sacked += seg.end - seg.start
                self.sacked_segs += 1
                self._flight.pop(seg, None)
                self._delivered(seg, now)
            i += 1

    def _forget(self, seg: Sent) -> None:
        size = seg.end - seg.start
        if seg.flags & SACKED:
            self.sacked -= size
            self.sacked_segs -= 1
        elif seg.flags & LOST:
            self.lost -= size

    def _delivered(self, seg: Sent, now: float) -> None:
        """RFC 8985 6.2 steps 2 and 3 for one newly delivered segment."""
        rtt = now - seg.xmit
        if seg.flags & RETRANSMITTED and rtt < self.min_rtt:
            return  # maybe the original's delivery: no sample (6.2 step 2)
        if rtt < self.min_rtt:
            self.min_rtt = rtt
        if seg.xmit > self.rack_xmit or (seg.xmit == self.rack_xmit and seg.end > self.rack_end):
            self.rack_xmit = seg.xmit
            self.rack_end = seg.end
            self.rack_rtt = rtt
        if seg.end > self.fack:
            self.fack = seg.end
        elif seg.end < self.fack and not seg.flags & RETRANSMITTED:
            self.reord = True  # delivered out of order, and not because we resent it

    # -- detecting loss --------------------------------------------------------------
    def reo_wnd(self, in_recovery: bool, srtt: float) -> float:
        """RFC 8985 6.2 step 4's reordering window."""
        if not self.reord and (in_recovery or self.sacked_segs >= DUPTHRESH):
            return 0.0
        if self.min_rtt == float("inf"):
            return 0.0
        return min(self.reo_mult * self.min_rtt / 4, srtt)

    def update_reo_wnd(self, dsack: bool, una: int, snd_max: int) -> None:
        """Grow the window once per round trip that brings a D-SACK."""
        if self.dsack_round is not None and una >= self.dsack_round:
            self.dsack_round = None
        if dsack and self.dsack_round is None:
            self.dsack_round = snd_max
            self.reo_mult += 1
            self.reo_persist = REO_PERSIST

    def recovery_ended(self) -> None:
        """A recovery ended: after REO_PERSIST without a D-SACK the window shrinks back."""
        self.reo_persist -= 1
        if self.reo_persist <= 0:
            self.reo_mult = 1

    def detect_loss(self, now: float, reo_wnd: float) -> int:
        """Mark lost what RACK says is lost (RFC 8985 6.2 step 5); arm ``reo_at``
        for what may still arrive.  Returns the number of segments marked."""
        rack_xmit, rack_end = self.rack_xmit, self.rack_end
        horizon = self.rack_rtt + reo_wnd - now
        lost: list[Sent] = []
        timeout = 0.0
        for seg in self._flight:
            if seg.xmit > rack_xmit:
                break  # sent after the last delivered segment: too early to tell
            if seg.xmit == rack_xmit and seg.end >= rack_end:
                continue
            remaining = seg.xmit + horizon
            if remaining <= TIMER_SLACK:
                lost.append(seg)
            elif remaining > timeout:
                timeout = remaining
        for seg in lost:
            self.mark_lost(seg)
        self.reo_at = now + timeout if timeout else None
        return len(lost)


def _first_ending_after(segs: list[Sent], lo: int, seq: int) -> int:
    """The index of the first segment (from ``lo``) whose end is above ``seq``."""
    hi = len(segs)
    while lo < hi:
        mid = (lo + hi) // 2
        if segs[mid].end <= seq:
            lo = mid + 1
        else:
            hi = mid
    return lo
