"""One TCP connection: the state machine of RFC 9293 with its buffers and timers.

Theory of operation.  A ``TcpConnection`` is driven by three kinds of calls,
each with the current monotonic time ``now``: a segment addressed to it
(``on_segment``, from the stack's demultiplexer), the application's calls
(``send``, ``recv``, ``shutdown``, ``close``, ``abort``) and its timer
(``on_timer`` at ``deadline``).  What it wants sent it appends, as whole IP
packets, to the stack's output list; what the application should hear of
it becomes ``Ready`` flags (``events``).  It opens no socket, reads no
clock and draws no randomness (the initial sequence number is given).

Sequence numbers are unwrapped: internally they are plain integers that
grow without wrapping (the ISN plus bytes sent), converted to 32 bits on
the wire and back (``_unwrap``, relative to the nearest expected value), so
every comparison is ``<`` instead of modular arithmetic.

Where this follows what, section by section:

* segment arrival: RFC 9293 3.10.7 (acceptability test, RST, SYN, ACK,
  text, FIN, in that order), with RFC 5961's challenge ACKs for RSTs and
  SYNs that are in the window but not exact;
* sending: the window is ``min(cwnd, peer window)``; a segment smaller than
  the MSS goes only when it is the last of the data queued (sender-side
  silly-window avoidance, RFC 9293 3.8.6.2.1, without Nagle's delay: the
  application's writes are already whole requests or large chunks);
* acknowledgments: in-order data is acknowledged once per batch of input
  (``flush``, called by the stack after each batch) rather than by a
  delayed-ACK timer; out-of-order data at once, with SACK blocks (RFC
  2018), so the sender's loss recovery sees every hole, and data we had
  already with a D-SACK (RFC 2883), so it learns that it resent needlessly;
* retransmission: RFC 6298's timer (``rto``); SACK-based loss recovery
  (RFC 6675) with RACK's time-based loss detection (RFC 8985), or NewReno's
  (RFC 6582) with a peer that does not SACK (``recovery``); the window's
  arithmetic (``congestion``); after a timeout everything unSACKed is
  resent, lowest first, as the window reopens; zero-window probes
  (3.8.6.1); keepalives (3.8.4) when enabled;
* closing: half-close by FIN, TIME_WAIT for 2 MSL, an orphaned FIN_WAIT_2
  bounded as Linux bounds it (``tcp_fin_timeout``), RST on ``abort`` and
  on ``close`` with unread data (RFC 2525 2.17).
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wgpy.netstack import segment
from wgpy.netstack.congestion import NewReno
from wgpy.netstack.events import Ready
from wgpy.netstack.ip import Buffer, Path
from wgpy.netstack.reassembly import Reassembly
from wgpy.netstack.recovery import DUPTHRESH, Scoreboard
from wgpy.netstack.rto import RttEstimator
from wgpy.netstack.segment import ACK, FIN, PSH, RST, SYN, Segment

if TYPE_CHECKING:
    from wgpy.netstack.stack import TcpListener

_M = 0xFFFFFFFF
_HALF = 1 << 31
_WRAP = 1 << 32
MAX_WINDOW = 65535  # the header field; larger windows need window scaling
WC_DEL_ACK = 0.2  # RFC 8985 7.2: the longest a receiver delays an ACK


class State(enum.Enum):
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"
    CLOSED = "CLOSED"


# States in which data and a FIN may be sent, and in which data may arrive.
_SENDING = frozenset({State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.CLOSING,
                      State.LAST_ACK})
_RECEIVING = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})


@dataclass
class TcpConfig:
    """Buffers, timers and limits; the defaults follow Linux where RFC 9293
    leaves a choice."""

    recv_buffer: int = 1 << 20  # bytes: the largest window we advertise
    send_buffer: int = 1 << 20  # bytes the application may queue
    sack: bool = True
    min_rto: float = 0.2
    max_rto: float = 60.0
    syn_retries: int = 6  # tcp_syn_retries: about two minutes
    data_retries: int = 15  # tcp_retries2
    msl: float = 30.0  # TIME_WAIT lasts 2 MSL (Linux: 60 s in all)
    fin_timeout: float = 60.0  # tcp_fin_timeout: an orphaned FIN-WAIT-2
    keepalive: bool = False
    keepalive_idle: float = 7200.0
    keepalive_interval: float = 75.0
    keepalive_probes: int = 9


def _unwrap(wire: int, ref: int) -> int:
    """The unwrapped sequence number nearest ``ref`` whose low 32 bits are ``wire``."""
    d = (wire - ref) & _M
    return ref + d - _WRAP if d >= _HALF else ref + d


def _wscale_for(buffer: int) -> int:
    shift = 0
    while (MAX_WINDOW << shift) < buffer and shift < segment.MAX_WSCALE:
        shift += 1
    return shift


class TcpConnection:
    """One connection's state; see the module's theory of operation."""

    def __init__(self, path: Path, lport: int, rport: int, iss: int, mss: int,
                 config: TcpConfig, out: list[bytearray],
                 notify: Callable[[TcpConnection], None]) -> None:
        self.path = path
        self.lport = lport
        self.rport = rport
        self.config = config
        self._out = out
        self._notify = notify  # the stack: "this connection has events or a new deadline"
        self.user: object = None
        self.listener: TcpListener | None = None
        self.state = State.CLOSED
        self.error: int | None = None  # errno once the connection failed
        self.soft_error: int | None = None  # an ICMP error, reported if it then times out
        self.events = Ready.NONE
        # send side: sndbuf holds the bytes from buf_seq on (unacknowledged, then unsent)
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss  # the highest sequence number sent (snd_nxt may go back after an RTO)
        self.snd_wnd = 0
        self.max_snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.snd_wscale = 0
        self.buf_seq = iss + 1
        self.sndbuf = bytearray()
        self.fin_queued = False  # the application has no more to send
        # receive side
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # the right edge of the window we advertised
        self.rcv_wscale = 0
        self._wscale_offer = _wscale_for(config.recv_buffer)
        self.rcvbuf = bytearray()
        self.reasm = Reassembly()
        self.fin_seq: int | None = None  # where the peer's FIN is, once seen
        self.peer_closed = False  # its FIN was received (in order)
        self.sack_ok = False
        self.wscale_ok = False
        self.closed_by_app = False
        self.ack_pending = False
        self._dsack: tuple[int, int] | None = None  # a duplicate to report in the next ACK
        # path and recovery
        self.mss_limit = mss  # what our MTU allows
        self.mss = mss
        self.cc = NewReno(mss)
        self.sb = Scoreboard()
        self._force_rtx = False  # send the next lost segment even if the pipe is full
        self._reno_held = 0  # without SACK: bytes the duplicate ACKs say the receiver holds
        self._undo_marker: int | None = None  # SND.UNA when the current recovery began
        self._undo_retrans = 0  # its retransmissions not yet reported as duplicates
        self.tlp_at: float | None = None  # the tail loss probe's timer
        self.retransmits = 0  # segments sent again (counters, as Linux's tcp_info has)
        self.timeouts = 0  # retransmission timeouts with data in flight
        self._tlp_end: int | None = None  # SND.MAX when a probe went, until it is answered
        self.rtt = RttEstimator(config.min_rto, config.max_rto)
        self._rtt_seq: int | None = None  # the segment being timed ends here
        self._rtt_time = 0.0
        self._dupacks = 0
        self._retries = 0
        # timers (None: not armed); ``deadline`` is their minimum
        self.rtx_at: float | None = None  # retransmission, SYN, or zero-window probe
        self.ka_at: float | None = None
        self.close_at: float | None = None  # TIME_WAIT, or an orphaned FIN_WAIT_2
        self._ka_probes = 0
        self.keepalive = config.keepalive
        self.keepalive_idle = config.keepalive_idle
        self.keepalive_interval = config.keepalive_interval
        self.keepalive_probes = config.keepalive_probes
        self.deadline: float | None = None
        self.scheduled: float | None = None  # the stack's: the deadline its timer heap holds

    # -- the application's side ------------------------------------------------
    @property
    def readable(self) -> int:
        return len(self.rcvbuf)

    @property
    def at_eof(self) -> bool:
        """Everything the peer sent has been read, and it sent a FIN."""
        return self.peer_closed and not self.rcvbuf

    @property
    def send_space(self) -> int:
        return max(0, self.config.send_buffer - len(self.sndbuf))

    @property
    def established(self) -> bool:
        return self.state not in (State.SYN_SENT, State.SYN_RECEIVED, State.CLOSED)

    def open_active(self, now: float) -> None:
        """Send our SYN (an active open)."""
        self.state = State.SYN_SENT
        self._send_syn(now, ack=False)

    def send(self, data: Buffer, now: float) -> int:
        """Queue as much of ``data`` as the send buffer takes and send what the
        windows allow; returns the number of bytes taken.

        :raises ConnectionError: the connection failed (its errno), or the
            application already shut down its sending side (EPIPE)."""
        self._check_error()
        if self.fin_queued or self.state not in _SENDING | {State.SYN_SENT, State.SYN_RECEIVED}:
            raise BrokenPipeError(errno.EPIPE, "the sending side is shut down")
        n = min(len(data), self.send_space)
        if n:
            self.sndbuf += memoryview(data)[:n] if n < len(data) else data
            if self.state in _SENDING:
                self._output(now)
        return n

    def recv(self, limit: int, now: float) -> bytes:
        """Up to ``limit`` bytes of received data (b"" if none: see ``at_eof``)."""
        n = min(limit, len(self.rcvbuf))
        if not n:
            return b""
        with memoryview(self.rcvbuf) as mv:
            data = bytes(mv[:n])
        del self.rcvbuf[:n]
        self._maybe_window_update(now)
        return data

    def recv_into(self, buffer: memoryview, now: float) -> int:
        """Like ``recv``, into ``buffer``; returns the number of bytes."""
        n = min(len(buffer), len(self.rcvbuf))
        if n:
            with memoryview(self.rcvbuf) as mv:
                buffer[:n] = mv[:n]
            del self.rcvbuf[:n]
            self._maybe_window_update(now)
        return n

    def set_keepalive(self, enabled: bool, now: float, idle: float | None = None,
                      interval: float | None = None, probes: int | None = None) -> None:
        """Turn keepalive probes (RFC 9293 3.8.4) on or off for this connection."""
        self.keepalive = enabled
        self.keepalive_idle = idle if idle is not None else self.keepalive_idle
        self.keepalive_interval = interval if interval is not None else self.keepalive_interval
        self.keepalive_probes = probes if probes is not None else self.keepalive_probes
        self._ka_probes = 0
        self.ka_at = now + self.keepalive_idle if enabled and self.established else None
        self._update_deadline()

    def shutdown(self, now: float) -> None:
        """No more data from us: a FIN follows what is queued (half-close)."""
        if self.fin_queued or self.state in (State.CLOSED, State.TIME_WAIT):
            return
        self.fin_queued = True
        if self.state in (State.SYN_SENT, State.SYN_RECEIVED):
            return  # the FIN goes out once established
        self._fin_state_after_queue()
        self._output(now)

    def close(self, now: float) -> None:
        """The application is done with the connection.  Unread data makes it an
        abort (RFC 2525 2.17, as Linux); otherwise a FIN, and the connection
        finishes closing on its own (it stays in the stack until it has)."""
        if self.closed_by_app:
            return
        self.closed_by_app = True
        if self.state is State.CLOSED:
            return
        if self.rcvbuf or self.state is State.SYN_SENT:
            self.abort(now)
            return
        self.shutdown(now)
        if self.state is State.FIN_WAIT_2:
            self._arm_close(now + self.config.fin_timeout)

    def abort(self, now: float, error: int = errno.ECONNABORTED) -> None:
        """Reset the connection (RST to the peer when synchronized)."""
        if self.state is State.CLOSED:
            return
        if self.state not in (State.SYN_SENT, State.TIME_WAIT):
            self._emit(self.snd_nxt, RST | ACK)
        self._terminate(error if not self.closed_by_app else None)

    # -- the stack's side --------------------------------------------------------
    def open_passive(self, seg: Segment, now: float) -> None:
        """A SYN came to a listener: answer it with our SYN-ACK."""
        self.irs = seg.seq
        self.rcv_nxt = self.irs + 1
        self.rcv_adv = self.rcv_nxt
        self._take_syn_options(seg)
        self.snd_wnd = seg.window  # never scaled in a SYN
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = self.irs
        self.snd_wl2 = self.iss
        self.state = State.SYN_RECEIVED
        self._send_syn(now, ack=True)

    def on_icmp_unreachable(self, error: int, now: float) -> None:
        """An ICMP destination unreachable quoting one of our segments: fatal
        while connecting (as Linux), remembered otherwise."""
        if self.state is State.SYN_SENT:
            self._terminate(error)
        else:
            self.soft_error = error

    def flush(self, now: float) -> None:
        """Send what may be sent, and the acknowledgment a batch of input is
        owed (called once per batch by the stack)."""
        if self.state in _SENDING:
            self._output(now)
        if self.ack_pending:
            self._emit(self.snd_nxt, ACK)

    def on_segment(self, seg: Segment, now: float) -> None:
        """A segment for this connection (RFC 9293 3.10.7)."""
        state = self.state
        if state is State.SYN_SENT:
            self._on_segment_syn_sent(seg, now)
            return
        if state is State.CLOSED:
            return
        flags = seg.flags
        seq = _unwrap(seg.seq, self.rcv_nxt)
        payload = seg.payload
        n = len(payload)
        seg_len = n + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        # 1. acceptability (3.10.7.4, first check)
        right = max(self.rcv_adv, self.rcv_nxt)
        rcv_nxt = self.rcv_nxt
        if seg_len == 0:
            ok = rcv_nxt <= seq <= right
        else:
            ok = seq < right and seq + seg_len > rcv_nxt if right > rcv_nxt else False
        if not ok:
            if not flags & RST:
                self.ack_pending = True
                if n and seq + n <= rcv_nxt and self.sack_ok:
                    self._dsack = (seq, seq + n)  # we had it: say so (RFC 2883)
                if right == rcv_nxt and flags & ACK and seq == rcv_nxt:
                    self._on_ack(seg, seq, now)  # a zero window still takes ACKs
            return
        if self.keepalive:
            self._ka_probes = 0
            self.ka_at = now + self.keepalive_idle
        # 2. RST (RFC 5961 3.2: only an exact one resets; others are challenged)
        if flags & RST:
            if seq != rcv_nxt:
                self.ack_pending = True
                return
            if state is State.SYN_RECEIVED and self.listener is not None:
                self._terminate(None, silently=True)  # back to listening
            elif state in (State.CLOSING, State.LAST_ACK, State.TIME_WAIT):
                self._terminate(None)
            else:
                self._terminate(errno.ECONNRESET)
            return
        # 3. SYN in a synchronized state: a challenge ACK (RFC 5961 4.2)
        if flags & SYN:
            self.ack_pending = True
            return
        if not flags & ACK:
            return
        # trim to the window: what came before rcv_nxt, and what goes past it
        if seq < rcv_nxt:
            cut = rcv_nxt - seq
            payload = payload[cut:]
            seq = rcv_nxt
        fin = bool(flags & FIN)
        if seq + len(payload) > right:
            payload = payload[: right - seq]
            fin = False
        # 4. ACK
        if not self._on_ack(seg, seq, now):
            return
        # 5. text
        if payload:
            if self.state in _RECEIVING:
                if self.closed_by_app:
                    # Nobody will read it (Linux resets, RFC 9293 3.10.7.4 allows).
                    self.abort(now, errno.ECONNRESET)
                    return
                self._receive_data(seq, payload)
            elif self.state is State.TIME_WAIT:
                self.ack_pending = True
        # 6. FIN
        if fin:
            self.fin_seq = seq + len(payload)
        if self.fin_seq is not None and self.fin_seq == self.rcv_nxt and not self.peer_closed:
            self._receive_fin(now)
        elif fin and self.state is State.TIME_WAIT:
            self.ack_pending = True  # a retransmitted FIN: ACK it again, restart the wait
            self._arm_close(now + 2 * self.config.msl)

    def on_timer(self, now: float) -> None:
        """Run whichever of this connection's timers are due."""
        if self.close_at is not None and now >= self.close_at:
            self.close_at = None
            self._terminate(None if self.state is State.TIME_WAIT else errno.ETIMEDOUT)
            return
        if self.rtx_at is not None and now >= self.rtx_at:
            self.rtx_at = None
            self._on_rtx_timer(now)
        if self.tlp_at is not None and now >= self.tlp_at:
            self.tlp_at = None
            if self.state in _SENDING and self.snd_una < self.snd_max:
                self._on_tlp_timer(now)
        if self.sb.reo_at is not None and now >= self.sb.reo_at:
            self.sb.reo_at = None
            if self.state in _SENDING and self.snd_una < self.snd_max:
                self._detect_loss(now)  # the reordering timer (RFC 8985 6.3)
                self._output(now)
        if self.ka_at is not None and now >= self.ka_at and self.state is not State.CLOSED:
            self._on_keepalive_timer(now)
        self._update_deadline()

    # -- arrival ----------------------------------------------------------------------
    def _on_segment_syn_sent(self, seg: Segment, now: float) -> None:
        flags = seg.flags
        ack = 0
        if flags & ACK:
            ack = _unwrap(seg.ack, self.iss)
            if ack <= self.iss or ack > self.snd_max:
                if not flags & RST:
                    self._emit_raw(seg.ack, 0, RST)
                return
        if flags & RST:
            if flags & ACK:
                self._terminate(errno.ECONNREFUSED)
            return
        if not flags & SYN:
            return
        self.irs = seg.seq
        self.rcv_nxt = self.irs + 1
        self.rcv_adv = self.rcv_nxt
        self._take_syn_options(seg)
        if flags & ACK:
            self.snd_una = ack
            self.snd_wnd = seg.window  # a SYN's window is never scaled
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1 = self.irs
            self.snd_wl2 = ack
            if self._rtt_seq is not None:
                self.rtt.sample(now - self._rtt_time)
                self._rtt_seq = None
            self.rtx_at = None
            self._retries = 0
            self._established(now)
            self.events |= Ready.CONNECTED | Ready.WRITABLE
            self.ack_pending = True
            if self.fin_queued:
                self._fin_state_after_queue()
            self._output(now)
        else:
            # Simultaneous open (3.5): answer with a SYN-ACK.
            self.state = State.SYN_RECEIVED
            self._send_syn(now, ack=True)
        self._notify(self)

    def _take_syn_options(self, seg: Segment) -> None:
        if seg.mss is not None:
            self.mss = max(64, min(self.mss_limit, seg.mss))
        else:
            self.mss = min(self.mss_limit, 536)  # RFC 9293 3.7.1's default
        self.cc = NewReno(self.mss)
        self.wscale_ok = seg.wscale is not None
        if seg.wscale is not None:
            self.snd_wscale = seg.wscale
            self.rcv_wscale = self._wscale_offer
        else:
            self.snd_wscale = self.rcv_wscale = 0
        self.sack_ok = seg.sack_ok and self.config.sack

    def _established(self, now: float) -> None:
        self.state = State.ESTABLISHED
        if self.keepalive:
            self.ka_at = now + self.keepalive_idle

    def _on_ack(self, seg: Segment, seq: int, now: float) -> bool:
        """The ACK field (3.10.7.4, fifth check).  False: drop the segment."""
        ack = _unwrap(seg.ack, self.snd_una)
        state = self.state
        if state is State.SYN_RECEIVED:
            if not self.snd_una < ack <= self.snd_max:
                self._emit_raw(seg.ack, 0, RST)
                return False
            self.snd_wnd = seg.window << self.snd_wscale
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            self._established(now)
            if self.fin_queued:
                self._fin_state_after_queue()
            if self.listener is not None:
                self.listener.ready(self)
            state = self.state
        if ack > self.snd_max:
            self.ack_pending = True  # it acknowledges what we never sent
            return False
        wnd = seg.window << self.snd_wscale
        if self.snd_una < self.snd_max:
            self._on_ack_data(seg, ack, wnd, now)
        # The send window (3.10.7.4): from the newest segment only.
        if self.snd_wl1 < seq or (self.snd_wl1 == seq and self.snd_wl2 <= ack):
            opened = wnd > self.snd_wnd
            self.snd_wnd = wnd
            self.max_snd_wnd = max(self.max_snd_wnd, wnd)
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if opened and self.rtx_at is not None and self.snd_una == self.snd_max:
                self.rtx_at = None  # a zero-window probe is no longer needed
        fin_acked = self.fin_queued and self.snd_una == self.buf_seq + len(self.sndbuf) + 1
        if fin_acked:
            if state is State.FIN_WAIT_1:
                self.state = State.FIN_WAIT_2
                if self.closed_by_app:
                    self._arm_close(now + self.config.fin_timeout)
            elif state is State.CLOSING:
                self._enter_time_wait(now)
            elif state is State.LAST_ACK:
                self._terminate(None)
                return False
        return True

    def _on_ack_data(self, seg: Segment, ack: int, wnd: int, now: float) -> None:
        """An ACK while data is in flight: the scoreboard, loss detection, recovery."""
        sb = self.sb
        una = self.snd_una
        if ack > una:
            sb.ack(ack, now)
            partial = self._ack_new(ack, now)
            if partial and not self.sack_ok and sb.mark_first_lost():
                self._force_rtx = True  # RFC 6582 3.2 step 3
        elif (ack == una and not len(seg.payload) and not seg.flags & (SYN | FIN)
              and wnd == self.snd_wnd):
            self._dupacks += 1
            if not self.sack_ok:
                self._reno_held = min(self._reno_held + self.mss, self.snd_max - una)
        if self.sack_ok and seg.sack:
            blocks = [(_unwrap(left, ack), _unwrap(right, ack)) for left, right in seg.sack]
            dsack = sb.sack(blocks, self.snd_una, self.snd_max, now)
            sb.update_reo_wnd(dsack, self.snd_una, self.snd_max)
            if dsack and self._undo_marker is not None and blocks[0][0] >= self._undo_marker:
                # The receiver had what we resent.  When it had all we resent in
                # this recovery, the loss was reordering: undo the window's
                # reduction (RFC 2883 5, as Linux's DSACK undo).
                self._undo_retrans -= 1
                if self._undo_retrans <= 0:
                    self._undo_marker = None
                    self.cc.undo()
        if self.snd_una < self.snd_max:
            self._detect_loss(now)
        else:
            sb.reo_at = None
        self._update_deadline()

    def _detect_loss(self, now: float) -> None:
        """Judge what is lost; a first loss starts a recovery (RFC 6675 5)."""
        sb = self.sb
        una = self.snd_una
        cc = self.cc
        found = False
        if self.sack_ok:
            if sb.sacked or cc.in_loss_episode(una):
                srtt = self.rtt.srtt if self.rtt.srtt is not None else self.rtt.rto
                found = sb.detect_loss(now, sb.reo_wnd(cc.in_loss_episode(una), srtt)) > 0
        elif self._dupacks == DUPTHRESH:
            found = sb.mark_first_lost()  # RFC 5681 3.2 step 2
        if found and cc.may_recover(una):
            cc.on_loss(self.snd_max - una, self.snd_max)
            self._force_rtx = True  # the first retransmission goes at once (RFC 6675 4.3)
            self._undo_marker = una
            self._undo_retrans = 0
            self._tlp_end = self.tlp_at = None

    def _ack_new(self, ack: int, now: float) -> bool:
        """Returns True for a partial acknowledgment in recovery."""
        acked = ack - self.snd_una
        end_data = self.buf_seq + len(self.sndbuf)
        data_acked = min(ack, end_data) - self.buf_seq
        if data_acked > 0:
            del self.sndbuf[:data_acked]
            self.buf_seq += data_acked
            self.events |= Ready.WRITABLE
            self._notify(self)
        self.snd_una = ack
        if self.snd_nxt < ack:
            self.snd_nxt = ack
        if self._rtt_seq is not None and ack >= self._rtt_seq:
            self.rtt.sample(now - self._rtt_time)
            self._rtt_seq = None
        self._retries = 0
        self._dupacks = 0
        self.soft_error = None
        was_recovering = self.cc.in_recovery
        partial = self.cc.on_ack(acked, ack, self.snd_max - ack)
        if was_recovering and not self.cc.in_recovery:
            self.sb.recovery_ended()
        self._reno_held = max(self._reno_held - acked, 0) if self.cc.in_recovery else 0
        self.rtx_at = None if ack >= self.snd_max else now + self.rtt.rto
        if self._tlp_end is not None and ack >= self._tlp_end:
            self._tlp_end = None  # the probe was answered
        self._arm_tlp(now)
        return partial  # the caller updates the deadline

    def _receive_data(self, seq: int, payload: memoryview | bytes) -> None:
        if seq == self.rcv_nxt:
            self.rcvbuf += payload
            self.rcv_nxt += len(payload)
            if self.reasm:
                more = self.reasm.pop(self.rcv_nxt)
                if more:
                    self.rcvbuf += more
                    self.rcv_nxt += len(more)
                    self._emit(self.snd_nxt, ACK)  # a hole filled: tell the sender now
            self.ack_pending = True
            self.events |= Ready.READABLE
            self._notify(self)
        else:
            self.reasm.add(seq, payload)
            self._emit(self.snd_nxt, ACK)  # a duplicate ACK at once (RFC 5681 4.2)

    def _receive_fin(self, now: float) -> None:
        self.rcv_nxt += 1
        self.peer_closed = True
        self.ack_pending = True
        self.events |= Ready.READABLE
        self._notify(self)
        state = self.state
        if state in (State.ESTABLISHED, State.SYN_RECEIVED):
            self.state = State.CLOSE_WAIT
        elif state is State.FIN_WAIT_1:
            self.state = State.CLOSING
        elif state is State.FIN_WAIT_2:
            self._enter_time_wait(now)

    # -- sending ----------------------------------------------------------------------
    def _send_syn(self, now: float, ack: bool) -> None:
        # A SYN offers window scaling and SACK; a SYN-ACK only agrees to what
        # the peer's SYN offered (RFC 7323 1.3, RFC 2018 2).
        if ack:
            sack = self.sack_ok
            wscale = self.rcv_wscale if self.wscale_ok else None
        else:
            sack = self.config.sack
            wscale = self._wscale_offer
        opts = segment.syn_options(self.mss_limit, wscale, sack)
        flags = SYN | ACK if ack else SYN
        window = min(self.config.recv_buffer, MAX_WINDOW)
        self._out.append(segment.build(self.path, self.lport, self.rport, self.iss & _M,
                                       self.rcv_nxt & _M if ack else 0, flags, window, opts))
        self.rcv_adv = self.rcv_nxt + window if ack else self.rcv_adv
        self.snd_nxt = self.iss + 1
        self.snd_max = max(self.snd_max, self.snd_nxt)
        if self._retries == 0:
            self._rtt_seq = self.snd_nxt
            self._rtt_time = now
        self.rtx_at = now + self.rtt.rto
        self._update_deadline()

    def _window(self) -> int:
        """The window to advertise (scaled), moving ``rcv_adv``: the right edge
        never moves back (RFC 9293 3.8.6.2.2), and moves forward only by at
        least min(buffer/2, MSS) (receiver-side silly-window avoidance)."""
        ws = self.rcv_wscale
        free = max(self.config.recv_buffer - len(self.rcvbuf), 0)
        edge = self.rcv_nxt + (min(free >> ws, MAX_WINDOW) << ws)
        if edge >= self.rcv_adv + min(self.config.recv_buffer // 2, self.mss):
            self.rcv_adv = edge
        return min(max(self.rcv_adv - self.rcv_nxt, 0) >> ws, MAX_WINDOW)

    def _emit(self, seq: int, flags: int, payload: Buffer = b"") -> None:
        """Send one segment at ``seq`` (unwrapped) carrying our ACK and window."""
        opts = b""
        if self.sack_ok and (self.reasm or self._dsack) and flags & ACK:
            blocks = [self._dsack] if self._dsack else []
            self._dsack = None
            blocks += self.reasm.ranges(segment.MAX_SACK_BLOCKS - len(blocks))
            opts = segment.sack_option([(s & _M, e & _M) for s, e in blocks])
        self._out.append(segment.build(self.path, self.lport, self.rport, seq & _M,
                                       self.rcv_nxt & _M, flags, self._window(), opts,
                                       payload))
        self.ack_pending = False

    def _emit_raw(self, seq: int, ack: int, flags: int) -> None:
        """A segment outside the connection's numbering (a RST answering a
        segment that does not belong): wire values, no window."""
        self._out.append(segment.build(self.path, self.lport, self.rport, seq & _M, ack & _M,
                                       flags, 0))

    def _output(self, now: float) -> None:
        """Send what the windows allow: first the segments judged lost, lowest
        first, then new data and the FIN (RFC 6675 ``NextSeg``)."""
        end_data = self.buf_seq + len(self.sndbuf)
        sb = self.sb
        cwnd = self.cc.cwnd
        pipe = max(sb.pipe(self.snd_max - self.snd_una) - self._reno_held, 0)
        sent = False
        if sb.lost:
            while pipe < cwnd or self._force_rtx:
                seg = sb.next_lost()
                if seg is None:
                    break
                self._force_rtx = False
                self._send_again(seg.start, seg.end, end_data)
                sb.retransmitted(seg, now)
                self._undo_retrans += 1
                pipe += seg.end - seg.start
                sent = True
        self._force_rtx = False
        limit = self.snd_una + self.snd_wnd
        mss = self.mss
        while True:
            nxt = self.snd_nxt
            avail = end_data - nxt
            if avail > 0:
                n = min(mss, avail, limit - nxt, cwnd - pipe)
                if n <= 0:
                    break
                if n < mss and n < avail and n < self.max_snd_wnd // 2:
                    break  # silly window: wait for room for a full segment
            elif not (avail == 0 and self.fin_queued and nxt == end_data):
                break
            else:
                n = 0  # the FIN alone
            self._send_new(n, end_data, now)
            pipe += self.snd_nxt - nxt
            sent = True
        if sent:
            if self.rtx_at is None:
                self.rtx_at = now + self.rtt.rto
            self._arm_tlp(now)
            self._update_deadline()
        elif end_data > self.snd_nxt and self.snd_una == self.snd_max and self.rtx_at is None:
            # Data waits, nothing is in flight, and the window takes no segment
            # we may send (zero, or too small): the persist timer (3.8.6.1), which
            # is also the override timeout of 3.8.6.2.1.
            self.rtx_at = now + self.rtt.rto
            self._update_deadline()

    def _send_new(self, n: int, end_data: int, now: float) -> None:
        """Send the ``n`` bytes at SND.NXT, with the FIN if they are the last."""
        nxt = self.snd_nxt
        last = nxt + n == end_data
        flags = ACK | PSH if last else ACK
        if last and self.fin_queued:
            flags |= FIN
        if n:
            off = nxt - self.buf_seq
            self._emit(nxt, flags, self.sndbuf[off : off + n])
        else:
            self._emit(nxt, flags & ~PSH)
        self.snd_nxt = nxt + n + (1 if flags & FIN else 0)
        self.sb.sent(nxt, self.snd_nxt, now)
        if self.snd_nxt > self.snd_max:
            if self._rtt_seq is None:
                self._rtt_seq = self.snd_nxt
                self._rtt_time = now
            self.snd_max = self.snd_nxt

    def _arm_tlp(self, now: float) -> None:
        """Arm the tail loss probe (RFC 8985 7.2) if it may be sent and comes
        before the RTO: a tail lost whole draws no ACK to detect it by."""
        self.tlp_at = None
        srtt = self.rtt.srtt
        if (not self.sack_ok or srtt is None or self._tlp_end is not None
                or self.snd_una == self.snd_max or self.cc.in_loss_episode(self.snd_una)):
            return
        pto = 2 * srtt
        if self.snd_max - self.snd_una <= self.mss:
            pto += WC_DEL_ACK  # one segment: the peer may delay its ACK
        if self.rtx_at is None or now + pto < self.rtx_at:
            self.tlp_at = now + pto

    def _on_tlp_timer(self, now: float) -> None:
        """Send the probe (RFC 8985 7.3): new data if the peer's window takes it,
        else the last segment again; the RTO then starts afresh."""
        end_data = self.buf_seq + len(self.sndbuf)
        room = self.snd_una + self.snd_wnd - self.snd_nxt
        if end_data > self.snd_nxt and room > 0:
            self._send_new(min(self.mss, end_data - self.snd_nxt, room), end_data, now)
        else:
            seg = self.sb.last()
            if seg is None:
                return
            self._send_again(seg.start, seg.end, end_data)
            self.sb.resent(seg, now)
        self._tlp_end = self.snd_max
        self.rtx_at = now + self.rtt.rto

    def _send_again(self, start: int, end: int, end_data: int) -> None:
        """Retransmit [start, end) (a FIN counts one, past the data)."""
        self.retransmits += 1
        if self._rtt_seq is not None and start < self._rtt_seq <= end:
            self._rtt_seq = None  # Karn: the timed segment is the one resent
        stop = min(end, end_data)
        flags = ACK | PSH
        if end > end_data:
            flags |= FIN
        if stop > start:
            off = start - self.buf_seq
            self._emit(start, flags, self.sndbuf[off : stop - self.buf_seq])
        else:
            self._emit(start, flags & ~PSH)

    def _fin_state_after_queue(self) -> None:
        if self.state is State.ESTABLISHED:
            self.state = State.FIN_WAIT_1
        elif self.state is State.CLOSE_WAIT:
            self.state = State.LAST_ACK

    def _maybe_window_update(self, now: float) -> None:
        if self.state not in _RECEIVING:
            return
        offered = self.rcv_adv - self.rcv_nxt
        free = self.config.recv_buffer - len(self.rcvbuf)
        if free - offered >= 2 * self.mss and offered < self.config.recv_buffer // 2:
            self._emit(self.snd_nxt, ACK)

    # -- timers -------------------------------------------------------------------------
    def _on_rtx_timer(self, now: float) -> None:
        cfg = self.config
        state = self.state
        if state in (State.SYN_SENT, State.SYN_RECEIVED):
            self._retries += 1
            if self._retries > cfg.syn_retries:
                self._terminate(self.soft_error or errno.ETIMEDOUT)
                return
            self.rtt.expired()
            self._rtt_seq = None
            self._send_syn(now, ack=state is State.SYN_RECEIVED)
            return
        if self.snd_una < self.snd_max:
            self._retries += 1
            if self._retries > cfg.data_retries:
                self._terminate(self.soft_error or errno.ETIMEDOUT)
                return
            self.timeouts += 1
            self.cc.on_timeout(self.snd_max - self.snd_una, self.snd_max)
            self.rtt.expired()
            self._rtt_seq = None
            self._dupacks = 0
            self._reno_held = 0
            self._undo_marker = None
            self._tlp_end = self.tlp_at = None
            self.sb.timed_out()  # resend everything not acknowledged, lowest first
            self._output(now)
            if self.rtx_at is None:
                self.rtx_at = now + self.rtt.rto
            return
        end_data = self.buf_seq + len(self.sndbuf)
        if end_data > self.snd_nxt:
            room = self.snd_una + self.snd_wnd - self.snd_nxt
            if room > 0:
                # The override timeout: send what the small window takes.
                n = min(room, self.mss, end_data - self.snd_nxt)
                off = self.snd_nxt - self.buf_seq
                self._emit(self.snd_nxt, ACK | PSH, self.sndbuf[off : off + n])
                self.sb.sent(self.snd_nxt, self.snd_nxt + n, now)
                self.snd_nxt += n
                self.snd_max = max(self.snd_max, self.snd_nxt)
            else:
                # Zero-window probe: an old sequence number draws an ACK with the window.
                self._emit(self.snd_una - 1, ACK)
                self.rtt.expired()
            self.rtx_at = now + self.rtt.rto

    def _on_keepalive_timer(self, now: float) -> None:
        self.ka_at = None
        if not self.keepalive or self.state not in (State.ESTABLISHED, State.CLOSE_WAIT):
            return
        if self._ka_probes >= self.keepalive_probes:
            self._terminate(self.soft_error or errno.ETIMEDOUT)
            return
        self._ka_probes += 1
        self._emit(self.snd_una - 1, ACK)
        self.ka_at = now + self.keepalive_interval

    def _enter_time_wait(self, now: float) -> None:
        self.state = State.TIME_WAIT
        self.rtx_at = self.sb.reo_at = self.tlp_at = None
        self.ka_at = None
        self._arm_close(now + 2 * self.config.msl)

    def _arm_close(self, when: float) -> None:
        self.close_at = when
        self._update_deadline()

    def _update_deadline(self) -> None:
        times = [t for t in (self.rtx_at, self.ka_at, self.close_at, self.sb.reo_at,
                             self.tlp_at) if t is not None]
        deadline = min(times) if times else None
        if deadline != self.deadline:
            self.deadline = deadline
            self._notify(self)

    def _terminate(self, error: int | None, silently: bool = False) -> None:
        self.state = State.CLOSED
        self.error = error
        self.rtx_at = self.ka_at = self.close_at = self.sb.reo_at = self.tlp_at = None
        self.deadline = None
        if not silently:
            self.events |= Ready.CLOSED | Ready.READABLE | Ready.WRITABLE
        self._notify(self)

    def _check_error(self) -> None:
        if self.error is not None:
            raise _error(self.error)


def _error(code: int) -> OSError:
    """The exception the socket API raises for ``code``, as a kernel socket would."""
    text = errno.errorcode.get(code, str(code))
    message = {
        errno.ECONNREFUSED: "Connection refused",
        errno.ECONNRESET: "Connection reset by peer",
        errno.ETIMEDOUT: "Connection timed out",
        errno.EHOSTUNREACH: "No route to host",
        errno.ENETUNREACH: "Network is unreachable",
        errno.ECONNABORTED: "Connection aborted",
    }.get(code, text)
    exc_type: type[OSError] = {
        errno.ECONNREFUSED: ConnectionRefusedError,
        errno.ECONNRESET: ConnectionResetError,
        errno.ECONNABORTED: ConnectionAbortedError,
        errno.ETIMEDOUT: TimeoutError,
    }.get(code, OSError)
    return exc_type(code, message)


error_for = _error
