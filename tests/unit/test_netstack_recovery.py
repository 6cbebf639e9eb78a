"""Loss recovery of wgpy.netstack's TCP: the scoreboard and RACK on their own
(wgpy.netstack.recovery), then the sender over the in-memory link
(wgpy.testing.stacklink): several holes repaired in one round trip, a lost
tail probed before the RTO, reordering that costs neither time nor the
window, loss repaired without timeouts, D-SACKs, and a peer without SACK."""

from __future__ import annotations

import hashlib

import pytest

from wgpy.netstack import Stack, TcpConfig, TcpConnection
from wgpy.netstack import segment as seg
from wgpy.netstack.ip import PROTO_TCP, Path, pack, parse
from wgpy.netstack.recovery import LOST, RETRANSMITTED, SACKED, Scoreboard
from wgpy.testing.stacklink import B_ADDR4, LinkParams, StackLink

MSS = 1380


def board(n: int, size: int = 100, t: float = 0.0) -> Scoreboard:
    sb = Scoreboard()
    for i in range(n):
        sb.sent(i * size, (i + 1) * size, t + i * 0.001)
    return sb


def test_sack_marks_whole_segments_and_leaves_the_pipe() -> None:
    sb = board(10)
    assert sb.pipe(1000) == 1000
    assert not sb.sack([(300, 650)], 0, 1000, 0.05)  # 650: half of a segment is not it
    assert sb.sacked == 300 and sb.sacked_segs == 3
    assert sb.pipe(1000) == 700
    sb.ack(150, 0.06)  # a partial ACK of a segment
    assert sb.pipe(850) == 550 and len(sb) == 9
    sb.ack(400, 0.07)  # over SACKed data
    assert sb.sacked == 200 and sb.sacked_segs == 2 and sb.pipe(600) == 400


def test_rack_marks_older_segments_lost_at_once_before_reordering_is_seen() -> None:
    sb = board(10)
    sb.sack([(500, 800)], 0, 1000, 0.05)  # segments 5-7, sent at 5-7 ms
    assert sb.rack_end == 800 and sb.rack_rtt == pytest.approx(0.043)
    assert not sb.reord and sb.reo_wnd(False, 0.05) == 0.0  # three SACKed: DupThresh
    assert sb.detect_loss(0.05, 0.0) == 5  # 0-4 were sent before 7 and are missing
    assert sb.lost == 500 and sb.pipe(1000) == 1000 - 300 - 500
    first = sb.next_lost()
    assert first is not None and first.start == 0
    sb.retransmitted(first, 0.05)
    assert sb.lost == 400 and first.flags == RETRANSMITTED


def test_rack_waits_a_reordering_window_once_the_path_reorders() -> None:
    sb = board(10)
    sb.sack([(200, 300)], 0, 1000, 0.03)
    sb.ack(100, 0.031)  # segment 0 arrives after segment 2, never resent: reordering
    assert sb.reord
    srtt = 0.03
    wnd = sb.reo_wnd(False, srtt)
    assert wnd == pytest.approx(sb.min_rtt / 4)
    assert sb.detect_loss(0.031, wnd) == 0  # segment 1 may still come
    assert sb.reo_at is not None and sb.reo_at > 0.031
    assert sb.detect_loss(sb.reo_at, wnd) == 1  # the reordering timer: now it is lost
    seg1 = sb.next_lost()
    assert seg1 is not None and seg1.start == 100 and seg1.flags == LOST


def test_a_lost_retransmission_is_found_by_time() -> None:
    sb = board(4)
    sb.sack([(300, 400)], 0, 400, 0.05)
    assert sb.detect_loss(0.05, 0.0) == 3
    for _ in range(3):
        s = sb.next_lost()
        assert s is not None
        sb.retransmitted(s, 0.05)
    sb.sent(400, 500, 0.06)  # new data after the retransmissions
    sb.sack([(300, 500)], 0, 500, 0.1)
    assert sb.detect_loss(0.1, 0.0) == 3  # all three resent before 400-500 arrived
    assert sb.lost == 300


def test_dsack_is_told_from_sack_and_grows_the_window_once_a_round() -> None:
    sb = board(10)
    sb.ack(500, 0.05)
    assert sb.sack([(100, 200)], 500, 1000, 0.06)  # below the ACK: a duplicate
    assert sb.sack([(600, 700), (600, 800)], 500, 1000, 0.06)  # inside the second
    assert not sb.sack([(600, 700), (800, 900)], 500, 1000, 0.06)
    assert sb.dsacks == 2
    sb.update_reo_wnd(True, 500, 1000)
    sb.update_reo_wnd(True, 600, 1000)  # the same round: no growth
    assert sb.reo_mult == 2
    sb.update_reo_wnd(True, 1000, 1200)
    assert sb.reo_mult == 3
    for _ in range(16):
        sb.recovery_ended()
    assert sb.reo_mult == 1


def test_a_timeout_marks_everything_lost_and_forgets_sacks() -> None:
    sb = board(5)
    sb.sack([(200, 300)], 0, 500, 0.05)
    sb.timed_out()
    assert sb.sacked == 0 and sb.lost == 500 and sb.pipe(500) == 0
    starts = []
    while (s := sb.next_lost()) is not None:
        starts.append(s.start)
        sb.retransmitted(s, 0.3)
    assert starts == [0, 100, 200, 300, 400]
    sb.sack([(200, 300)], 0, 500, 0.31)  # SACKed again: not lost any more
    flags = {x.start: x.flags for x in sb.segments()}
    assert sb.sacked == 100 and flags[200] == SACKED | RETRANSMITTED and flags[100] == RETRANSMITTED


# -- the sender over the in-memory link ----------------------------------------------

def connect(link: StackLink) -> tuple[TcpConnection, TcpConnection]:
    lst = link.b.listen(80)
    c = link.a.connect(pack(B_ADDR4), 80, link.now)
    link.run_until(lambda: c.established and bool(lst.queue), 30)
    s = lst.accept()
    assert s is not None
    return c, s


def transfer(link: StackLink, c: TcpConnection, s: TcpConnection, n: int,
             limit: float = 600.0) -> float:
    """Send ``n`` bytes from ``c`` to ``s``; check them; the simulated seconds taken."""
    data = _data(n)
    sent = 0
    got = bytearray()
    start = link.now

    def step() -> bool:
        nonlocal sent
        if sent < n:
            sent += c.send(memoryview(data)[sent:], link.now)
        while chunk := s.recv(1 << 20, link.now):
            got.extend(chunk)
        return len(got) == n

    link.run_until(step, limit)
    assert bytes(got) == data
    return link.now - start


def _data(n: int) -> bytes:
    out = bytearray()
    block = b"sack"
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def data_segments(link: StackLink, c: TcpConnection,
                  drop: set[int] | None = None) -> list[tuple[float, int]]:
    """Record (time, offset) of each data segment ``a`` sends; drop the first
    transmission of the segments at the offsets in ``drop``."""
    seen: list[tuple[float, int]] = []
    offsets: set[int] = set()

    def tap(from_a: bool, data: bytes) -> None:
        link.params.loss = 0.0
        p = parse(data)
        if not from_a or p.proto != PROTO_TCP:
            return
        sg = seg.parse(p.payload)
        if not len(sg.payload):
            return
        off = (sg.seq - c.iss - 1) & 0xFFFFFFFF
        seen.append((link.now, off))
        first = off not in offsets
        offsets.add(off)
        if drop and first and off in drop:
            link.params.loss = 1.0  # this packet only

    link.taps.insert(0, tap)
    return seen


def test_several_holes_in_one_window_are_repaired_in_one_round_trip() -> None:
    link = StackLink(20, LinkParams(delay=0.01))
    c, s = connect(link)
    holes = {2 * MSS, 4 * MSS, 6 * MSS}  # in the first flight (10 segments)
    seen = data_segments(link, c, drop=holes)
    took = transfer(link, c, s, 60 * MSS)
    link.run_until(lambda: c.snd_una == c.snd_max, 10)
    resent = [t for t, off in seen if off in holes]
    assert len(resent) == 6  # each hole once more, nothing else
    assert len(seen) == 63 and c.retransmits == 3 and c.timeouts == 0
    # NewReno repairs one hole per round trip (20 ms); SACK all three at once.
    assert max(resent[3:]) - min(resent[3:]) < 0.005
    assert max(resent[3:]) - min(resent[:3]) < 0.05  # within about two round trips
    assert took < c.config.min_rto  # no timeout


def test_a_lost_tail_is_probed_before_the_rto() -> None:
    link = StackLink(21, LinkParams(delay=0.01))
    c, s = connect(link)
    transfer(link, c, s, 50 * MSS)  # an RTT estimate, and cwnd to spare
    link.run_until(lambda: c.snd_una == c.snd_max, 10)
    n = 20 * MSS
    base = c.snd_una - c.iss - 1
    data_segments(link, c, drop={base + 18 * MSS, base + 19 * MSS})
    took = transfer(link, c, s, n)
    assert c.timeouts == 0 and c.retransmits == 2
    assert took < c.config.min_rto  # a probe after 2 SRTT, not a 200 ms RTO


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reordering_costs_neither_time_nor_retransmissions(seed: int) -> None:
    # 1 ms each way plus up to 4 ms: segments overtake each other by several.
    link = StackLink(seed, LinkParams(delay=0.001, jitter=0.004))
    c, s = connect(link)
    took = transfer(link, c, s, 2_000_000)
    assert c.timeouts == 0
    # The duplicate ACKs reordering causes made NewReno retransmit 50-70
    # segments and halve its window each time: over a second.  RACK learns
    # the reordering (and D-SACKs undo the rest).
    assert c.retransmits < 40 and took < 0.5
    assert c.sb.reord and c.sb.dsacks > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loss_behind_a_bottleneck_is_repaired_without_timeouts(seed: int) -> None:
    link = StackLink(seed, LinkParams(loss=0.05, delay=0.01, rate=2e6))
    c, s = connect(link)
    took = transfer(link, c, s, 2_000_000)
    # NewReno: 19-29 timeouts and 10-13 simulated seconds on these seeds.
    assert c.timeouts <= 2 and took < 9


def test_a_duplicate_segment_is_answered_with_a_dsack() -> None:
    link = StackLink(22, LinkParams(delay=0.001))
    c, s = connect(link)
    transfer(link, c, s, 10 * MSS)
    sent: list[seg.Segment] = []

    def tap(from_a: bool, data: bytes) -> None:
        p = parse(data)
        if not from_a and p.proto == PROTO_TCP:
            sent.append(seg.parse(p.payload))

    link.taps.append(tap)
    # The segment at offset MSS again, as a spurious retransmission would be.
    path = Path(c.path.src, c.path.dst, PROTO_TCP)
    left = (c.iss + 1 + MSS) & 0xFFFFFFFF
    dup = seg.build(path, c.lport, c.rport, left, c.rcv_nxt & 0xFFFFFFFF, seg.ACK,
                    1000, b"", _data(2 * MSS)[MSS:])
    link.b.receive([dup], link.now)
    link.pump()
    assert sent and sent[-1].sack == [(left, (left + MSS) & 0xFFFFFFFF)]
    n = len(sent)
    transfer(link, c, s, 3 * MSS)
    assert len(sent) > n and all(not x.sack for x in sent[n:])  # reported once


def test_without_sack_the_sender_falls_back_to_newreno() -> None:
    link = StackLink(23, LinkParams(delay=0.01), config=TcpConfig(sack=False))
    c, s = connect(link)
    assert not c.sack_ok
    seen = data_segments(link, c, drop={5 * MSS, 9 * MSS})
    took = transfer(link, c, s, 60 * MSS)
    assert c.timeouts == 0 and c.retransmits == 2 and len(seen) == 62
    assert took < c.config.min_rto  # fast retransmit, then a partial ACK: no RTO


def test_counters_start_at_zero() -> None:
    a = Stack(["10.66.0.1"], 1420, bytes, None, True)
    c = a.connect(pack(B_ADDR4), 80, 0.0)
    assert c.retransmits == 0 and c.timeouts == 0 and len(c.sb) == 0
