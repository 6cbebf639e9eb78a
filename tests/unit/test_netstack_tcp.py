"""The TCP of wgpy.netstack between two in-memory stacks (wgpy.testing.stacklink):
the handshake and its options, closing in every way, RFC 5961's challenge
ACKs, retransmission, keepalive, zero windows, ICMP, UDP, echo, bad input."""

from __future__ import annotations

import errno
import os
import random

import pytest

from wgpy.netstack import Ready, Stack, State, TcpConfig, TcpConnection, TcpListener
from wgpy.netstack import segment as seg
from wgpy.netstack.ip import PROTO_TCP, Path, pack, parse
from wgpy.protocol.ippacket import unreachable
from wgpy.testing.stacklink import A_ADDR4, A_ADDR6, B_ADDR4, B_ADDR6, LinkParams, StackLink

B4 = pack(B_ADDR4)


def established(link: StackLink, remote: str = B_ADDR4, port: int = 80
                ) -> tuple[TcpConnection, TcpConnection, TcpListener]:
    lst = link.b.listen(port)
    c = link.a.connect(pack(remote), port, link.now)
    link.run_until(lambda: c.established and bool(lst.queue), 30)
    s = lst.accept()
    assert s is not None
    return c, s, lst


def drain(conn: TcpConnection, link: StackLink) -> bytes:
    out = bytearray()
    while data := conn.recv(1 << 20, link.now):
        out += data
    return bytes(out)


def segments(link: StackLink) -> list[tuple[bool, seg.Segment]]:
    """Record every TCP segment sent from now on: (from a?, segment)."""
    seen: list[tuple[bool, seg.Segment]] = []

    def tap(from_a: bool, data: bytes) -> None:
        p = parse(data)
        if p.proto == PROTO_TCP:
            seen.append((from_a, seg.parse(p.payload)))

    link.taps.append(tap)
    return seen


def test_handshake_negotiates_mss_window_scale_and_sack() -> None:
    link = StackLink(1, mtu=1420)
    seen = segments(link)
    c, s, _ = established(link)
    syn, synack = seen[0][1], seen[1][1]
    assert syn.flags == seg.SYN and syn.mss == 1420 - 40 and syn.sack_ok
    assert syn.wscale is not None and syn.wscale > 0
    assert synack.flags == seg.SYN | seg.ACK and synack.mss == 1380 and synack.sack_ok
    assert c.mss == s.mss == 1380 and c.sack_ok and s.sack_ok
    assert c.snd_wscale == s.rcv_wscale and c.rcv_wscale == s.snd_wscale
    assert c.state is s.state is State.ESTABLISHED


def test_ipv6_mss_is_smaller_by_the_header() -> None:
    link = StackLink(2)
    c, s, _ = established(link, B_ADDR6)
    assert c.mss == 1420 - 60 and c.path.v6
    c.send(b"over v6", link.now)
    link.run_until(lambda: s.readable == 7)
    assert s.recv(100, link.now) == b"over v6"


def test_closed_port_refuses_with_rst() -> None:
    link = StackLink(3)
    c = link.a.connect(B4, 81, link.now)
    link.run_until(lambda: c.state is State.CLOSED)
    assert c.error == errno.ECONNREFUSED
    assert link.b.stats["tcp.reset_sent"] == 1


def test_half_close_both_ways_then_time_wait() -> None:
    link = StackLink(4, config=TcpConfig(msl=1.0))
    c, s, _ = established(link)
    c.send(b"request", link.now)
    c.shutdown(link.now)  # FIN after the data
    link.run_until(lambda: s.peer_closed)
    assert drain(s, link) == b"request" and s.state is State.CLOSE_WAIT and s.at_eof
    s.send(b"response after your FIN", link.now)  # the other half is still open
    s.close(link.now)
    link.run_until(lambda: c.peer_closed)
    assert drain(c, link) == b"response after your FIN"
    link.run_until(lambda: c.state is State.TIME_WAIT and s.state is State.CLOSED)
    assert c.error is None and s.error is None
    link.run_until(lambda: c.state is State.CLOSED, 5)  # 2 MSL later
    assert not link.a.conns and not link.b.conns


def test_abort_resets_the_peer() -> None:
    link = StackLink(5)
    c, s, _ = established(link)
    s.abort(link.now)
    link.run_until(lambda: c.state is State.CLOSED)
    assert c.error == errno.ECONNRESET


def test_close_with_unread_data_resets() -> None:
    link = StackLink(6)
    c, s, _ = established(link)
    c.send(b"never read", link.now)
    link.run_until(lambda: s.readable > 0)
    s.close(link.now)
    link.run_until(lambda: c.state is State.CLOSED)
    assert c.error == errno.ECONNRESET


def test_data_after_close_is_answered_with_rst() -> None:
    link = StackLink(7)
    c, s, _ = established(link)
    s.close(link.now)  # FIN; s is orphaned
    link.run_until(lambda: c.peer_closed)
    c.send(b"too late", link.now)
    link.run_until(lambda: c.state is State.CLOSED)
    assert c.error == errno.ECONNRESET


def _inject(link: StackLink, into: Stack, conn: TcpConnection, seq: int, flags: int) -> None:
    """A segment from ``conn``'s peer (its addresses and ports) with our own seq."""
    path = Path(conn.path.dst, conn.path.src, PROTO_TCP)
    into.receive([seg.build(path, conn.rport, conn.lport, seq & 0xFFFFFFFF,
                            conn.snd_nxt & 0xFFFFFFFF, flags, 1000)], link.now)


def test_rst_in_window_but_not_exact_gets_a_challenge_ack() -> None:
    link = StackLink(8)
    c, s, _ = established(link)
    seen = segments(link)
    _inject(link, link.a, c, c.rcv_nxt + 100, seg.RST)
    link.pump()
    assert c.state is State.ESTABLISHED
    assert seen and seen[-1][0] and seen[-1][1].flags == seg.ACK  # RFC 5961 3.2
    _inject(link, link.a, c, c.rcv_nxt + 10**6, seg.RST)  # outside: silently dropped
    assert c.state is State.ESTABLISHED
    _inject(link, link.a, c, c.rcv_nxt, seg.RST)  # exact: reset
    assert c.error == errno.ECONNRESET and not c.established


def test_syn_on_an_established_connection_gets_a_challenge_ack() -> None:
    link = StackLink(9)
    c, s, _ = established(link)
    seen = segments(link)
    _inject(link, link.a, c, c.rcv_nxt, seg.SYN)
    link.pump()
    assert c.state is State.ESTABLISHED
    assert seen[-1][1].flags == seg.ACK  # RFC 5961 4.2


def test_lost_segment_is_fast_retransmitted_before_the_rto() -> None:
    link = StackLink(10, LinkParams(delay=0.01))
    c, s, _ = established(link)
    dropped: list[int] = []
    filt_seen = segments(link)

    def drop_third(from_a: bool, data: bytes) -> None:
        p = parse(data)
        if from_a and p.proto == PROTO_TCP and len(seg.parse(p.payload).payload) and \
                not dropped and len([x for x in filt_seen if x[0] and len(x[1].payload)]) == 3:
            dropped.append(1)
            link.params.loss = 1.0  # this one packet only
        else:
            link.params.loss = 0.0

    link.taps.insert(0, drop_third)
    data = os.urandom(200_000)
    start = link.now
    sent = 0
    while sent < len(data):
        sent += c.send(data[sent:], link.now)
        link.step()
    got = bytearray()

    def done() -> bool:
        got.extend(drain(s, link))
        return len(got) == len(data)

    link.run_until(done, 30)
    assert bytes(got) == data and dropped
    assert link.now - start < c.rtt.min_rto + 0.5  # no RTO stall: fast retransmit


def test_rto_backs_off_and_recovers_after_an_outage() -> None:
    link = StackLink(11, LinkParams(delay=0.005))
    c, s, _ = established(link)
    link.params.loss = 1.0
    c.send(b"x" * 5000, link.now)
    for _ in range(200):
        link.step()
        if link.now > 1010:
            break
    assert c.rtt.backoff >= 3  # 0.2, 0.4, 0.8, 1.6 ... doubled each time
    link.params.loss = 0.0
    link.run_until(lambda: s.readable == 5000, 120)
    assert c.rtt.backoff > 0  # Karn: retransmitted data gives no RTT sample...
    c.send(b"new", link.now)
    link.run_until(lambda: s.readable == 5003, 10)
    link.run_until(lambda: c.snd_una == c.snd_max, 10)
    assert c.rtt.backoff == 0  # ...new data does, and the backoff ends


def test_keepalive_detects_a_dead_peer() -> None:
    cfg = TcpConfig(keepalive=True, keepalive_idle=10, keepalive_interval=1, keepalive_probes=3)
    link = StackLink(12, config=cfg)
    c, s, _ = established(link)
    link.run_until(lambda: link.now > 1030, 60)  # probes answered: still up
    assert c.state is State.ESTABLISHED
    link.params.loss = 1.0
    link.run_until(lambda: c.state is State.CLOSED, 60)
    assert c.error == errno.ETIMEDOUT


def test_zero_window_stalls_then_resumes() -> None:
    cfg = TcpConfig(recv_buffer=64 * 1024, send_buffer=256 * 1024)
    link = StackLink(13, config=cfg)
    c, s, _ = established(link)
    data = os.urandom(200_000)
    sent = c.send(data, link.now)
    # Full up to the last byte the window scale can express.
    link.run_until(lambda: c.snd_wnd == 0 and s.readable > 64 * 1024 - 4, 30)
    stalled = s.readable
    link.run_until(lambda: link.now > 1100, 200)  # persist probes keep it alive
    assert c.state is State.ESTABLISHED and s.readable == stalled
    got = bytearray()

    def done() -> bool:
        nonlocal sent
        got.extend(drain(s, link))
        if sent < len(data):
            sent += c.send(data[sent:], link.now)
        return len(got) == len(data)

    link.run_until(done, 60)
    assert bytes(got) == data


def test_icmp_unreachable_fails_a_connect() -> None:
    link = StackLink(14)
    sent: list[bytes] = []
    link.taps.append(lambda from_a, data: sent.append(data) if from_a else None)
    c = link.a.connect(pack("10.66.0.9"), 80, link.now)  # nobody owns .9
    link.pump()
    # What a WireGuard device answers for an address no peer's AllowedIPs cover.
    reply = unreachable(sent[0])
    assert reply is not None
    link.a.receive([reply], link.now)
    assert c.state is State.CLOSED and c.error == errno.EHOSTUNREACH


def test_udp_and_port_unreachable() -> None:
    link = StackLink(15)
    ub = link.b.udp_bind(5353)
    ua = link.a.udp_bind()
    link.a.udp_send(ua, B4, 5353, b"query")
    link.run_until(lambda: bool(ub.queue))
    data, src, sport = ub.take() or (b"", b"", 0)
    assert data == b"query" and src == pack(A_ADDR4) and sport == ua.port
    link.b.udp_send(ub, src, sport, b"answer")
    link.run_until(lambda: bool(ua.queue))
    assert ua.take() == (b"answer", B4, 5353)
    link.a.udp_send(ua, B4, 9, b"nobody")  # no one bound: ICMP port unreachable
    link.run_until(lambda: ua.error is not None)
    assert ua.error == errno.ECONNREFUSED
    with pytest.raises(OSError) as e:
        link.a.udp_send(ua, B4, 9, b"x" * 1500)
    assert e.value.errno == errno.EMSGSIZE


def test_echo_is_answered_both_families() -> None:
    link = StackLink(16)
    ep = link.a.echo_open()
    link.a.echo_send(ep, B4, 1, b"ping4")
    link.a.echo_send(ep, pack(B_ADDR6), 2, b"ping6")
    link.run_until(lambda: len(ep.replies) == 2)
    assert sorted(ep.replies) == sorted([(B4, 1, b"ping4"), (pack(B_ADDR6), 2, b"ping6")])
    events = link.a.take_events()
    assert any(obj is ep and flags & Ready.DATAGRAM for obj, flags in events)


def test_garbage_is_counted_never_raised() -> None:
    link = StackLink(17)
    c, s, _ = established(link)
    rnd = random.Random(17)
    good = seg.build(Path(pack(A_ADDR4), B4, PROTO_TCP), c.lport, c.rport, 1, 1, seg.ACK, 100)
    junk = [b"", b"\x45", b"\x60" + bytes(10), rnd.randbytes(60), bytes(good[:30]),
            bytes(good[:20]) + b"\xff" * 20]
    for _ in range(500):
        b = bytearray(good)
        b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        junk.append(bytes(b))
    link.b.receive(junk, link.now)
    assert sum(v for k, v in link.b.stats.items() if k.startswith("drop.")) > 400
    assert s.state is State.ESTABLISHED  # nothing that failed its checksum got through
    link.b.receive([bytes(good[:-1])], link.now)  # and a connection survives garbage
    c.send(b"still fine", link.now)
    link.run_until(lambda: s.readable == 10)


def test_listener_backlog_and_close() -> None:
    link = StackLink(18)
    lst = link.b.listen(80, backlog=2)
    conns = [link.a.connect(B4, 80, link.now) for _ in range(3)]
    link.run_until(lambda: len(lst.queue) == 2, 10)
    link.run_until(lambda: link.now > 1003, 10)
    assert sum(c.established for c in conns) == 2  # the third SYN waits (dropped)
    link.b.close_listener(lst, link.now)
    link.run_until(lambda: all(c.state is State.CLOSED for c in conns[:2]), 10)
    assert {c.error for c in conns[:2]} == {errno.ECONNRESET}


def test_addresses_and_mtu_are_checked() -> None:
    with pytest.raises(ValueError):
        Stack([A_ADDR6], 1000, os.urandom)
    st = Stack([A_ADDR4], 1420, os.urandom)
    with pytest.raises(OSError) as e:
        st.connect(pack(B_ADDR6), 80, 0.0)
    assert e.value.errno == errno.ENETUNREACH
    st.listen(80)
    with pytest.raises(OSError):
        st.listen(80)
    assert A_ADDR6  # both families are used by the link's stacks
