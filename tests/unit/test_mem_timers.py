"""The timer state machine, driven through two in-memory devices and a fake clock."""

from __future__ import annotations

import pytest

from wgpy.protocol import Action, DropReason, messages
from wgpy.protocol.constants import (
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ATTEMPT_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
)
from wgpy.testing.memnet import (
    A_EP,
    A_IP4,
    B_EP,
    B_IP4,
    DATA,
    INIT,
    MemNet,
    Node,
    p4,
    pair,
    peer_of,
    wires,
)

JITTER = REKEY_TIMEOUT_JITTER_MAX


def establish(net: MemNet, a: Node, b: Node) -> None:
    pkt = p4(A_IP4, B_IP4, 1)
    net.send(a, pkt)
    net.deliver()
    assert b.delivered[-1] == pkt


def keepalives(net: MemNet, node: Node) -> list[float]:
    return [w.time for w in wires(net, node, DATA) if len(w.data) == messages.TRANSPORT_MIN_SIZE]


# -- rekeying -----------------------------------------------------------------------


def test_initiator_rekeys_after_rekey_after_time() -> None:
    net, a, b = pair()
    establish(net, a, b)
    t0 = net.now
    pa = peer_of(a, b)
    first = pa.keypairs.current
    net.advance(REKEY_AFTER_TIME - 1)
    net.send(a, p4(A_IP4, B_IP4, 2))
    assert [w.data[0] for w in net.in_flight] == [DATA]  # young enough
    net.deliver()
    net.advance(2)  # now older than 120 s
    assert net.now - t0 > REKEY_AFTER_TIME
    net.send(a, p4(A_IP4, B_IP4, 3))
    # The packet still goes out on the old key, and a handshake starts.
    assert [w.data[0] for w in net.in_flight] == [DATA, INIT]
    net.deliver()
    assert pa.keypairs.current is not first and pa.keypairs.previous is first
    assert b.delivered[-1] == p4(A_IP4, B_IP4, 3)
    assert a.device.stats.handshakes_completed == 2


def test_responder_does_not_rekey_on_time_when_sending() -> None:
    net, a, b = pair()
    establish(net, a, b)
    net.advance(REKEY_AFTER_TIME + 5)
    net.send(b, p4(B_IP4, A_IP4, 2))
    assert [w.data[0] for w in net.in_flight] == [DATA]
    net.deliver()
    assert a.delivered == [p4(B_IP4, A_IP4, 2)]


def test_initiator_rekeys_when_receiving_on_an_old_key() -> None:
    net, a, b = pair()
    establish(net, a, b)
    # REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT = 165 s.
    net.advance(REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT - 2)
    net.send(b, p4(B_IP4, A_IP4, 2))
    net.deliver()
    assert wires(net, a, INIT)[-1].time < net.now - 100  # no new handshake yet
    net.advance(3)
    net.send(b, p4(B_IP4, A_IP4, 3))
    net.deliver()
    assert wires(net, a, INIT)[-1].time == net.now
    assert a.device.stats.handshakes_completed == 2
    # Only once ("last minute" handshake), not per packet.
    assert len(wires(net, a, INIT)) == 2


@pytest.mark.parametrize("sender", ["a", "b"])
def test_rekey_after_messages(sender: str) -> None:
    net, a, b = pair()
    establish(net, a, b)
    net.send(b, p4(B_IP4, A_IP4))  # b confirmed and sending too
    net.deliver()
    net.advance(REKEY_TIMEOUT + 1)
    node, other = (a, b) if sender == "a" else (b, a)
    src, dst = (A_IP4, B_IP4) if sender == "a" else (B_IP4, A_IP4)
    kp = peer_of(node, other).keypairs.current
    assert kp is not None
    kp.send_counter = REKEY_AFTER_MESSAGES - 1
    net.send(node, p4(src, dst, 5))
    # The next counter to use is 2^60: not yet past REKEY_AFTER_MESSAGES.
    assert [w.data[0] for w in net.in_flight] == [DATA]
    net.deliver()
    net.send(node, p4(src, dst, 6))
    assert [w.data[0] for w in net.in_flight] == [DATA, INIT]
    assert messages.TransportHeader.unpack(net.in_flight[0].data).counter == REKEY_AFTER_MESSAGES
    net.deliver()
    assert other.delivered[-2:] == [p4(src, dst, 5), p4(src, dst, 6)]
    assert node.device.stats.handshakes_completed == 2


def test_reject_after_messages() -> None:
    net, a, b = pair()
    establish(net, a, b)
    net.advance(REKEY_TIMEOUT + 1)
    pa = peer_of(a, b)
    kp = pa.keypairs.current
    assert kp is not None
    # A counter of REJECT_AFTER_MESSAGES is refused by the receiver...
    kp.send_counter = REJECT_AFTER_MESSAGES
    forged = pa._encrypt(kp, p4(A_IP4, B_IP4, 7))
    net.inject(A_EP, B_EP, forged)
    assert b.device.stats.drops[DropReason.KEY_EXPIRED] == 1
    # ... and never used by the sender: it handshakes instead.
    kp.send_counter = REJECT_AFTER_MESSAGES
    net.send(a, p4(A_IP4, B_IP4, 8))
    assert [w.data[0] for w in net.in_flight] == [INIT]
    net.deliver()
    assert b.delivered[-1] == p4(A_IP4, B_IP4, 8)
    # The last usable counter is REJECT_AFTER_MESSAGES - 1.
    kp2 = pa.keypairs.current
    assert kp2 is not None
    kp2.send_counter = REJECT_AFTER_MESSAGES - 1
    net.send(a, p4(A_IP4, B_IP4, 9))
    assert net.in_flight[0].data[0] == DATA
    net.deliver()
    assert b.delivered[-1] == p4(A_IP4, B_IP4, 9)


def test_keys_older_than_reject_after_time_are_never_used() -> None:
    net, a, b = pair()
    establish(net, a, b)
    t0 = net.now
    net.send(a, p4(A_IP4, B_IP4, 2))
    late = net.in_flight.pop()
    net.advance(REJECT_AFTER_TIME - 1)
    net.inject(late.src, late.dst, late.data)  # 179 s old key: fine
    assert b.delivered[-1] == p4(A_IP4, B_IP4, 2)
    net.send(a, p4(A_IP4, B_IP4, 3))
    # The send also started a rekey (the key is past 120 s): lose it.
    assert [w.data[0] for w in net.in_flight] == [DATA, INIT]
    late2 = net.in_flight[0]
    net.in_flight.clear()
    net.advance(2)
    assert net.now - t0 > REJECT_AFTER_TIME
    net.inject(late2.src, late2.dst, late2.data)
    assert b.device.stats.drops[DropReason.KEY_EXPIRED] == 1
    assert b.delivered[-1] == p4(A_IP4, B_IP4, 2)
    # Neither side sends on the expired keys.
    net.send(b, p4(B_IP4, A_IP4, 4))
    assert [w.data[0] for w in net.in_flight] == [INIT]
    net.deliver()
    assert a.delivered[-1] == p4(B_IP4, A_IP4, 4)


# -- retries and giving up ------------------------------------------------------------


def test_handshake_retries_with_jitter_then_gives_up() -> None:
    net, a, b = pair()
    net.filter = lambda w: False  # b never answers
    t0 = net.now
    net.send(a, p4(A_IP4, B_IP4, 1))
    pa = peer_of(a, b)
    net.advance(REKEY_ATTEMPT_TIME)
    assert list(pa.staged) == [p4(A_IP4, B_IP4, 1)]  # not given up before 90 s
    net.advance(30)
    times = [w.time for w in wires(net, a, INIT)]
    assert times[0] == t0
    # As the kernel: the first try and MAX_TIMER_HANDSHAKES + 1 retries.
    assert len(times) == MAX_TIMER_HANDSHAKES + 2 == 20
    gaps = [y - x for x, y in zip(times, times[1:], strict=False)]
    assert all(REKEY_TIMEOUT <= g < REKEY_TIMEOUT + JITTER for g in gaps), gaps
    assert len({round(g, 9) for g in gaps}) > 1  # jittered, not constant
    # Gave up: the staged packet is dropped and counted.
    assert not pa.staged
    assert a.device.stats.drops[DropReason.HANDSHAKE_GAVE_UP] == 1
    assert any("giving up" in m for m in a.logs)
    # And stays quiet.
    net.advance(300)
    assert len(wires(net, a, INIT)) == 20
    # New traffic starts a fresh round of attempts.
    net.filter = lambda w: True
    net.send(a, p4(A_IP4, B_IP4, 2))
    net.deliver()
    assert b.delivered == [p4(A_IP4, B_IP4, 2)]


def test_at_most_one_initiation_per_rekey_timeout() -> None:
    net, a, b = pair()
    net.filter = lambda w: False
    for _ in range(10):
        net.send(a, p4(A_IP4, B_IP4))
        net.advance(0.4)
    assert len(wires(net, a, INIT)) == 1


# -- keepalives ----------------------------------------------------------------------


def test_passive_keepalive_after_keepalive_timeout() -> None:
    net, a, b = pair()
    establish(net, a, b)
    t0 = net.now
    net.advance(60)
    # b got data and had nothing to send: one keepalive, KEEPALIVE_TIMEOUT later.
    assert keepalives(net, b) == [t0 + KEEPALIVE_TIMEOUT]
    # a got only a keepalive (no data): it sends none, and no new handshake
    # follows because it heard back within KEEPALIVE + REKEY_TIMEOUT.
    assert keepalives(net, a) == []
    assert len(wires(net, a, INIT)) == 1


def test_passive_keepalive_rearms_when_more_data_arrived() -> None:
    net, a, b = pair()
    establish(net, a, b)
    t0 = net.now
    net.advance(4)
    net.send(a, p4(A_IP4, B_IP4, 2))
    net.deliver()
    net.advance(60)
    assert keepalives(net, b) == [t0 + KEEPALIVE_TIMEOUT, t0 + 2 * KEEPALIVE_TIMEOUT]


def test_no_passive_keepalive_when_replying_with_data() -> None:
    net, a, b = pair()
    establish(net, a, b)
    net.advance(3)
    net.send(b, p4(B_IP4, A_IP4, 2))
    net.deliver()
    net.advance(60)
    assert keepalives(net, b) == []
    # a received data at t0+3 and sent none: a keepalives back once.
    assert len(keepalives(net, a)) == 1


def test_new_handshake_after_silence() -> None:
    net, a, b = pair()
    establish(net, a, b)
    net.advance(30)
    net.filter = lambda w: w.src != B_EP  # a stops hearing from b
    t1 = net.now
    net.send(a, p4(A_IP4, B_IP4, 2))
    net.deliver()
    net.advance(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + 1)
    inits = [w.time for w in wires(net, a, INIT)]
    assert len(inits) == 2
    assert t1 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT <= inits[1]
    assert inits[1] < t1 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + JITTER
    assert any("stopped hearing back" in m for m in a.logs)


def test_persistent_keepalive() -> None:
    net, a, b = pair()
    establish(net, a, b)
    net.advance(30)
    pa = peer_of(a, b)
    t1 = net.now
    out: list[Action] = []
    pa.set_persistent_keepalive(25, net.now, net.wall, out)
    net.handle(a, out)
    net.deliver()
    assert keepalives(net, a) == [t1]  # turning it on sends one at once
    net.advance(80)
    assert keepalives(net, a) == [t1, t1 + 25, t1 + 50, t1 + 75]
    # Any authenticated traffic pushes the next one back: here a's data at t2
    # and b's passive keepalive answering it at t2 + 10.
    net.send(a, p4(A_IP4, B_IP4, 2))
    t2 = net.now
    net.deliver()
    net.advance(KEEPALIVE_TIMEOUT + 25 + 1)
    assert keepalives(net, b)[-1] == t2 + KEEPALIVE_TIMEOUT
    assert keepalives(net, a)[-1] == t2 + KEEPALIVE_TIMEOUT + 25
    # Off: no more.
    out = []
    pa.set_persistent_keepalive(0, net.now, net.wall, out)
    n = len(keepalives(net, a))
    net.advance(100)
    assert len(keepalives(net, a)) == n


def test_persistent_keepalive_keeps_a_session_alive() -> None:
    net, a, b = pair()
    pa = peer_of(a, b)
    out: list[Action] = []
    pa.set_persistent_keepalive(25, net.now, net.wall, out)
    net.handle(a, out)
    net.deliver()
    assert pa.keypairs.current is not None
    net.advance(3 * REJECT_AFTER_TIME + 60)
    # Rekeyed along the way (the keepalives are sends with an aging key).
    assert a.device.stats.handshakes_completed >= 4
    kp = pa.keypairs.current
    assert kp is not None
    assert kp is not None and net.now - kp.created < REKEY_AFTER_TIME + 25 + 1


# -- zeroing ------------------------------------------------------------------------


def test_keys_zeroed_after_three_reject_after_time() -> None:
    net, a, b = pair()
    establish(net, a, b)
    t0 = net.now
    net.send(a, p4(A_IP4, B_IP4, 2))
    late = net.in_flight.pop()
    pa, pb = peer_of(a, b), peer_of(b, a)
    net.advance(3 * REJECT_AFTER_TIME - 1)
    assert pa.keypairs.current is not None and pb.keypairs.current is not None
    net.advance(2)
    assert net.now - t0 > 3 * REJECT_AFTER_TIME
    for p in (pa, pb):
        assert p.keypairs.all() == []
        assert p.handshake.chain_key == b"" and p.handshake.local_ephemeral == b""
    assert a.device.indices == {} and b.device.indices == {}
    assert any("Removing all keys" in m for m in a.logs)
    net.inject(late.src, late.dst, late.data)
    assert b.device.stats.drops[DropReason.UNKNOWN_INDEX] == 1
    # A new packet simply makes a new session.
    net.send(a, p4(A_IP4, B_IP4, 3))
    net.deliver()
    assert b.delivered[-1] == p4(A_IP4, B_IP4, 3)


def test_timers_quiet_when_idle() -> None:
    net, a, b = pair()
    establish(net, a, b)
    n = len(net.sent)
    net.advance(2000)
    # Only b's single passive keepalive; nothing after the keys were zeroed.
    assert len(net.sent) == n + 1
    nd = a.device.next_deadline()
    assert nd is None or nd > net.now


def test_flushing_staged_packets_never_passes_reject_after_messages() -> None:
    net, a, b = pair()
    establish(net, a, b)
    net.advance(REKEY_TIMEOUT + 1)
    pa = peer_of(a, b)
    kp = pa.keypairs.current
    assert kp is not None
    pkts = [p4(A_IP4, B_IP4, 10 + i) for i in range(4)]
    pa.staged.extend(pkts)
    kp.send_counter = REJECT_AFTER_MESSAGES - 2
    out: list[Action] = []
    pa.send_staged(net.now, net.wall, out)
    net.handle(a, out)
    data = [w for w in net.in_flight if w.data[0] == DATA]
    counters = [messages.TransportHeader.unpack(w.data).counter for w in data]
    assert counters == [REJECT_AFTER_MESSAGES - 2, REJECT_AFTER_MESSAGES - 1]
    # The rest wait for the new session that the exhausted key triggered.
    assert [w.data[0] for w in net.in_flight].count(INIT) == 1
    net.deliver()
    assert b.delivered[-4:] == pkts
    assert b.device.stats.drops[DropReason.KEY_EXPIRED] == 0
