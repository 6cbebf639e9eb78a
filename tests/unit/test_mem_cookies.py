"""DoS defences: cookies under load, the per-source rate limiter, the 20 ms
initiation flood guard and strictly increasing handshake timestamps."""

from __future__ import annotations

import ipaddress

import pytest

from wgpy.protocol import DropReason, messages, noise
from wgpy.protocol.constants import (
    COOKIE_REFRESH_TIME,
    HANDSHAKE_INITIATION_RATE,
    RATELIMIT_BURST,
    RATELIMIT_PACKETS_PER_SECOND,
    REKEY_TIMEOUT,
    UNDER_LOAD_AFTER_TIME,
    UNDER_LOAD_THRESHOLD,
)
from wgpy.protocol.cookie import CookieChecker, CookieGenerator, MacState
from wgpy.protocol.ratelimiter import RateLimiter
from wgpy.testing.memnet import (
    A_EP,
    A_IP4,
    B_EP,
    B_IP4,
    COOKIE,
    INIT,
    RESP,
    MemNet,
    Node,
    p4,
    pair,
    peer_of,
    wires,
)


def drops(node: Node, reason: DropReason) -> int:
    return node.device.stats.drops[reason]


def mac2_of(data: bytes) -> bytes:
    return messages.mac2_span(data)[1]


# -- the cookie round trip ---------------------------------------------------------


def test_cookie_reply_under_load_then_retry_with_mac2_succeeds() -> None:
    net, a, b = pair()
    b.device.force_under_load = True
    pkt = p4(A_IP4, B_IP4)
    net.send(a, pkt)
    net.deliver()
    # b answered with a cookie reply and did no DH.
    assert [w.data[0] for w in net.sent] == [INIT, COOKIE]
    assert b.device.stats.cookie_replies_sent == 1 and b.device.stats.responses_sent == 0
    assert drops(b, DropReason.BAD_MAC2) == 1
    assert drops(a, DropReason.BAD_COOKIE) == 0  # a consumed it
    assert mac2_of(net.sent[0].data) == bytes(16)
    # a does not resend at once; its retry carries mac2 and gets through.
    net.advance(REKEY_TIMEOUT + 1)
    inits = wires(net, a, INIT)
    assert len(inits) == 2 and mac2_of(inits[1].data) != bytes(16)
    assert b.delivered == [pkt]
    assert b.device.stats.responses_sent == 1


def test_cookie_on_the_response_path() -> None:
    net, a, b = pair()
    a.device.force_under_load = True  # the initiator is the one under load
    net.send(a, p4(A_IP4, B_IP4))
    net.deliver()
    assert [w.data[0] for w in net.sent] == [INIT, RESP, COOKIE]
    assert net.sent[2].src == A_EP and net.sent[2].dst == B_EP
    net.advance(REKEY_TIMEOUT + 1)
    resps = wires(net, b, RESP)
    assert len(resps) == 2 and mac2_of(resps[1].data) != bytes(16)
    assert b.delivered == [p4(A_IP4, B_IP4)]


def test_mac2_is_bound_to_the_source_address() -> None:
    net, a, b = pair()
    b.device.force_under_load = True
    net.send(a, p4(A_IP4, B_IP4))
    net.deliver()
    net.advance(REKEY_TIMEOUT + 1)
    with_mac2 = wires(net, a, INIT)[1]
    replies = b.device.stats.cookie_replies_sent
    # The same valid-mac2 initiation from another address or port: no DH.
    for src in (("10.0.0.77", A_EP[1]), (A_EP[0], A_EP[1] + 1)):
        acts = net.inject(src, B_EP, with_mac2.data)
        assert [a_.data[0] for a_ in acts if hasattr(a_, "data")] == [COOKIE]
    assert b.device.stats.cookie_replies_sent == replies + 2
    assert b.device.stats.responses_sent == 1


def test_forged_cookie_replies_are_dropped() -> None:
    net, a, b = pair()
    net.filter = lambda w: False
    net.send(a, p4(A_IP4, B_IP4))
    init = messages.parse(net.sent[0].data)
    assert isinstance(init, messages.Initiation)
    forged = messages.CookieReply(init.sender, bytes(24), bytes(32)).pack()
    net.inject(B_EP, A_EP, forged)
    assert drops(a, DropReason.BAD_COOKIE) == 1
    net.inject(B_EP, A_EP, messages.CookieReply(init.sender ^ 1, bytes(24), bytes(32)).pack())
    assert drops(a, DropReason.UNKNOWN_INDEX) == 1
    # a still sends mac2 = 0: no cookie was stored.
    net.advance(REKEY_TIMEOUT + 1)
    assert mac2_of(wires(net, a, INIT)[1].data) == bytes(16)


def test_cookie_and_secret_lifetimes() -> None:
    rng_state = [0]

    def rng(n: int) -> bytes:
        rng_state[0] += 1
        return bytes([rng_state[0]]) * n

    responder_pub = bytes(range(32))
    checker = CookieChecker(rng)
    checker.set_public_key(responder_pub)
    gen = CookieGenerator(responder_pub)
    msg = messages.Initiation(7, bytes(32), bytes(48), bytes(28)).pack()
    src = bytes([10, 0, 0, 1]) + (51820).to_bytes(2, "little")
    t = 100.0
    sent = gen.add_macs(msg, t)
    assert checker.check(sent, src, t) is MacState.VALID_MAC1_NO_COOKIE
    reply0 = messages.CookieReply.unpack(checker.make_reply(sent, 7, src, t))
    assert gen.consume_reply(reply0, t)
    # One reply per message sent: the same reply again (a replay) opens nothing.
    assert not gen.consume_reply(reply0, t + 50)
    with_cookie = gen.add_macs(msg, t + 1)
    assert checker.check(with_cookie, src, t + 1) is MacState.VALID_MAC1_AND_COOKIE
    other_src = bytes([10, 0, 0, 2]) + (51820).to_bytes(2, "little")
    assert checker.check(with_cookie, other_src, t + 1) is MacState.VALID_MAC1_NO_COOKIE
    # The responder's secret lives COOKIE_REFRESH_TIME: an older one makes no valid mac2.
    assert checker.check(with_cookie, src, t + COOKIE_REFRESH_TIME + 1) is (
        MacState.VALID_MAC1_NO_COOKIE
    )
    # The initiator stops using a cookie once it is COOKIE_REFRESH_TIME old.
    assert mac2_of(gen.add_macs(msg, t + COOKIE_REFRESH_TIME - 10)) != bytes(16)
    assert mac2_of(gen.add_macs(msg, t + COOKIE_REFRESH_TIME + 1)) == bytes(16)
    # A reply sealed for a different mac1 does not open.
    gen2 = CookieGenerator(responder_pub)
    gen2.add_macs(messages.Initiation(8, bytes(32), bytes(48), bytes(28)).pack(), t)
    reply = messages.CookieReply.unpack(checker.make_reply(sent, 7, src, t))
    assert not gen2.consume_reply(reply, t)
    # Garbage mac1: invalid, whatever the cookie.
    assert checker.check(msg, src, t) is MacState.INVALID_MAC1


# -- load detection ------------------------------------------------------------------


def test_flood_of_handshake_messages_puts_the_device_under_load() -> None:
    net, a, b = pair()
    garbage = b"\x01\0\0\0" + bytes(144)
    for i in range(UNDER_LOAD_THRESHOLD - 1):
        net.inject((f"10.50.{i // 250}.{i % 250}", 1000 + i), B_EP, garbage)
    assert not b.device.under_load(net.now)
    net.inject(("10.50.99.1", 999), B_EP, garbage)
    assert b.device.under_load(net.now)
    # Now a real initiation gets a cookie reply, not a response.
    net.send(a, p4(A_IP4, B_IP4))
    net.deliver()
    assert [w.data[0] for w in net.sent[-2:]] == [INIT, COOKIE]
    # The load state outlives the flood by UNDER_LOAD_AFTER_TIME, then ends.
    t_last = net.now
    net.now += UNDER_LOAD_AFTER_TIME * 0.9
    assert b.device.under_load(net.now)
    net.now = t_last + UNDER_LOAD_AFTER_TIME + 0.01
    assert not b.device.under_load(net.now)
    net.advance(REKEY_TIMEOUT)
    assert b.delivered == [p4(A_IP4, B_IP4)]


# -- the per-source rate limiter -----------------------------------------------------


def test_rate_limiter_on_the_device_under_load() -> None:
    net, a, b = pair()
    b.device.force_under_load = True
    net.send(a, p4(A_IP4, B_IP4))
    net.deliver()
    net.advance(REKEY_TIMEOUT + 1)
    good = wires(net, a, INIT)[1]  # valid mac2 from A_EP, already consumed
    net.advance(2.0)  # the limiter forgets idle sources after a second
    for _ in range(10):
        net.inject(good.src, B_EP, good.data)
    # RATELIMIT_BURST pass the limiter (then fail as replays), the rest are limited.
    assert drops(b, DropReason.RATE_LIMITED) == 10 - RATELIMIT_BURST
    assert drops(b, DropReason.REPLAYED_TIMESTAMP) == RATELIMIT_BURST


def _v4(i: int) -> bytes:
    return ipaddress.IPv4Address(0x0A000000 + i).packed


def test_rate_limiter_burst_and_rate() -> None:
    rl = RateLimiter()
    t = 50.0
    assert [rl.allow(_v4(1), t) for _ in range(RATELIMIT_BURST + 2)] == (
        [True] * RATELIMIT_BURST + [False, False]
    )
    # Other sources are unaffected.
    assert rl.allow(_v4(2), t)
    # One packet per 1/20 s after that.
    step = 1.0 / RATELIMIT_PACKETS_PER_SECOND
    assert rl.allow(_v4(1), t + step * 1.01)
    assert not rl.allow(_v4(1), t + step * 1.02)
    # Sustained flood at 200/s for 10 s: about 20/s get through.
    rl2 = RateLimiter()
    allowed = sum(rl2.allow(_v4(3), t + i / 200) for i in range(2000))
    expect = RATELIMIT_PACKETS_PER_SECOND * 10 + RATELIMIT_BURST
    assert expect - 2 <= allowed <= expect + 1


def test_rate_limiter_groups_ipv6_by_64() -> None:
    rl = RateLimiter()
    net64 = ipaddress.IPv6Address("fd00:1:2:3::").packed[:8]
    same = [net64 + i.to_bytes(8, "big") for i in range(1, 10)]
    assert [rl.allow(s, 1.0) for s in same] == [True] * RATELIMIT_BURST + [False] * 4
    other = ipaddress.IPv6Address("fd00:1:2:4::1").packed
    assert rl.allow(other, 1.0)
    # IPv4 addresses are not grouped.
    assert all(rl.allow(_v4(i), 1.0) for i in range(100, 120))


def test_rate_limiter_table_is_bounded() -> None:
    rl = RateLimiter(max_entries=100)
    assert all(rl.allow(_v4(i), 10.0) for i in range(100))
    assert not rl.allow(_v4(1000), 10.0)  # full: new sources refused
    assert rl.allow(_v4(5), 10.0)          # known ones still served
    assert len(rl) == 100
    # Idle entries age out, making room again.
    assert rl.allow(_v4(1000), 12.0)
    assert len(rl) <= 100
    rl2 = RateLimiter()
    for i in range(50_000):
        rl2.allow(_v4(i), 20.0 + i * 1e-6)
    assert len(rl2) <= rl2.max_entries


# -- initiation flood guard and timestamps -----------------------------------------------


def _fresh_initiation(net: MemNet, a: Node, b: Node, wall: float) -> bytes:
    """A new, valid initiation from a to b, made with wall clock ``wall``."""
    pa = peer_of(a, b)
    dev = a.device
    assert dev.identity is not None
    dev.free_handshake_index(pa)
    index = dev.allocate_index(pa, None)
    msg = noise.create_initiation(dev.identity, pa.handshake, index, dev.rng, wall)
    assert msg is not None
    return pa.cookies.add_macs(msg.pack(), net.now)


def test_initiation_flood_guard_20ms() -> None:
    net, a, b = pair()
    net.send(a, p4(A_IP4, B_IP4))
    net.deliver()
    t = net.now
    assert len(wires(net, b, RESP)) == 1
    net.now = t + HANDSHAKE_INITIATION_RATE / 2
    net.inject(A_EP, B_EP, _fresh_initiation(net, a, b, net.wall + 1))
    assert drops(b, DropReason.INITIATION_FLOOD) == 1
    assert len(wires(net, b, RESP)) == 1
    net.now = t + HANDSHAKE_INITIATION_RATE * 1.5
    net.inject(A_EP, B_EP, _fresh_initiation(net, a, b, net.wall + 2))
    assert len(wires(net, b, RESP)) == 2
    net.deliver()
    assert a.device.stats.handshakes_completed == 2


def test_handshake_timestamps_must_strictly_increase() -> None:
    net, a, b = pair()
    net.send(a, p4(A_IP4, B_IP4))
    net.deliver()
    wall0 = net.wall
    for dt in (-10.0, 0.0, 0.001):  # older, equal, same 2^24 ns slot
        net.advance(1.0)
        net.inject(A_EP, B_EP, _fresh_initiation(net, a, b, wall0 + dt))
    assert drops(b, DropReason.REPLAYED_TIMESTAMP) == 3
    assert len(wires(net, b, RESP)) == 1
    net.advance(1.0)
    net.inject(A_EP, B_EP, _fresh_initiation(net, a, b, wall0 + 0.05))
    assert len(wires(net, b, RESP)) == 2


@pytest.mark.parametrize("late", [True, False])
def test_stale_initiation_does_not_disturb_a_live_session(late: bool) -> None:
    net, a, b = pair()
    net.send(a, p4(A_IP4, B_IP4))
    net.deliver()
    old = wires(net, a, INIT)[0]
    if late:
        net.advance(200)
    pb = peer_of(b, a)
    before = [k.local_index for k in pb.keypairs.all()]
    net.inject(("10.0.0.200", 1), B_EP, old.data)
    assert [k.local_index for k in pb.keypairs.all()] == before
    assert pb.endpoint == A_EP
