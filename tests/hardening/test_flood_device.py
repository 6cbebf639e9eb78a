"""Handshake floods at the device level, on a fake clock (the netns test does it for real).

Under-load detection is a rate: UNDER_LOAD_THRESHOLD handshake messages in a
one-second window put the device under load until UNDER_LOAD_AFTER_TIME after
the last one.  Under load a valid-mac1 message without a valid mac2 costs one
BLAKE2s and one XChaCha20 (a cookie reply), never a DH; with a valid mac2 it
is charged to its source (/32, or /64 for IPv6) at 20 per second, burst 5.
"""

from __future__ import annotations

from collections.abc import Sequence

from wgpy.protocol import Device, DropReason, SendDatagram
from wgpy.protocol import messages as m
from wgpy.protocol.constants import (
    RATELIMIT_BURST,
    RATELIMIT_PACKETS_PER_SECOND,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    UNDER_LOAD_AFTER_TIME,
    UNDER_LOAD_THRESHOLD,
)
from wgpy.testing.attacks import junk_initiation, open_cookie_reply
from wgpy.testing.memnet import A_IP4, B_IP4, ipv4_packet, pair, wires

# Handshake messages that got past the cookie and rate-limit gate: each of
# these cost the responder at least one X25519.
DH_REASONS = (DropReason.HANDSHAKE_DECRYPT, DropReason.UNKNOWN_PEER,
              DropReason.REPLAYED_TIMESTAMP, DropReason.INITIATION_FLOOD,
              DropReason.UNEXPECTED_RESPONSE)


def dh_ops(dev: Device) -> int:
    accepted = dev.stats.initiations_received + dev.stats.responses_received
    return sum(dev.stats.drops[r] for r in DH_REASONS) + accepted


def _cookie_replies(acts: Sequence[object]) -> list[SendDatagram]:
    return [x for x in acts if isinstance(x, SendDatagram)
            and m.message_type(x.data) == m.MESSAGE_COOKIE_REPLY]


def test_flood_enters_under_load_answers_cookies_and_leaves() -> None:
    net, a, b = pair(21)
    dev = b.device
    t0 = net.now
    rate = 2000  # initiations per second, from 2000 sources
    replies = 0
    for i in range(rate * 3):
        now = t0 + i / rate
        src = (f"10.88.{(i >> 8) & 7}.{i & 255}", 1000 + i)
        replies += len(_cookie_replies(dev.decapsulate(junk_initiation(b.public), src,
                                                         now, net.wall)))
    # Only the messages before the threshold was reached cost a DH.
    assert dh_ops(dev) <= UNDER_LOAD_THRESHOLD
    assert replies == dev.stats.cookie_replies_sent >= rate * 3 - UNDER_LOAD_THRESHOLD
    assert dev.under_load(t0 + 3)
    # The load is gone: after UNDER_LOAD_AFTER_TIME the device does DH again and
    # sends no cookie reply.
    later = t0 + 3 + UNDER_LOAD_AFTER_TIME + 0.01
    assert not dev.under_load(later)
    before = dh_ops(dev)
    acts = dev.decapsulate(junk_initiation(b.public), ("10.88.9.9", 9), later, net.wall)
    assert not _cookie_replies(acts) and dh_ops(dev) == before + 1


def test_below_the_threshold_there_are_no_cookie_replies() -> None:
    net, a, b = pair(22)
    dev = b.device
    for i in range(UNDER_LOAD_THRESHOLD - 1):
        dev.decapsulate(junk_initiation(b.public), ("10.88.0.1", i + 1),
                        net.now + i * 0.001, net.wall)
    assert dev.stats.cookie_replies_sent == 0
    assert dh_ops(dev) == UNDER_LOAD_THRESHOLD - 1


def test_legitimate_peer_completes_during_a_flood() -> None:
    """a handshakes with b while b is flooded at 1000/s: a gets a cookie reply, and
    its retransmission (REKEY_TIMEOUT later, with mac2) is answered."""
    net, a, b = pair(23)
    dev = b.device
    flood_i = 0

    def flood(seconds: float) -> None:
        nonlocal flood_i
        end = net.now + seconds
        while net.now < end:
            net.now += 0.001
            net.wall += 0.001
            src = (f"10.89.{(flood_i >> 8) & 255}.{flood_i & 255}", 2000 + flood_i % 50000)
            dev.decapsulate(junk_initiation(b.public), src, net.now, net.wall)
            flood_i += 1
            for node in (a, b):
                net.handle(node, node.device.tick(net.now, net.wall))
            net.deliver()

    flood(1.0)
    assert dev.under_load(net.now)
    start = net.now
    net.send(a, ipv4_packet(A_IP4, B_IP4, b"legit"))
    net.deliver()
    assert wires(net, b, m.MESSAGE_COOKIE_REPLY), "a's first initiation gets a cookie reply"
    assert not b.delivered
    flood(REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + 0.5)
    assert dev.under_load(net.now)
    assert b.delivered == [ipv4_packet(A_IP4, B_IP4, b"legit")]
    took = a.device.peers[b.public].last_handshake_wall
    assert took is not None
    assert len(wires(net, b, m.MESSAGE_RESPONSE)) == 1
    # DH work during the flood: the legitimate handshake and nothing else
    # after the threshold was crossed.
    assert dh_ops(dev) <= UNDER_LOAD_THRESHOLD + 1
    elapsed = net.now - start
    assert elapsed < REKEY_TIMEOUT + 2


def _cookie_for(dev: Device, responder: bytes, src: tuple[str, int], now: float) -> bytes:
    first = junk_initiation(responder)
    reply = _cookie_replies(dev.decapsulate(first, src, now, 0.0))
    assert reply, "under load, a cookie reply is expected"
    return open_cookie_reply(reply[0].data, responder, first)


def _passed(dev: Device, msgs: int, src: tuple[str, int], cookie: bytes, responder: bytes,
            now: float) -> int:
    before = dh_ops(dev)
    for _ in range(msgs):
        dev.decapsulate(junk_initiation(responder, cookie=cookie), src, now, 0.0)
    return dh_ops(dev) - before


def test_rate_limit_per_ipv4_source() -> None:
    net, a, b = pair(24)
    dev = b.device
    dev.force_under_load = True
    now = net.now
    src = ("10.90.0.1", 40000)
    cookie = _cookie_for(dev, b.public, src, now)
    assert _passed(dev, 100, src, cookie, b.public, now) == RATELIMIT_BURST
    assert dev.stats.drops[DropReason.RATE_LIMITED] == 100 - RATELIMIT_BURST
    # One second later: 20 more tokens (capped at the burst).
    assert _passed(dev, 100, src, cookie, b.public, now + 1.0) == RATELIMIT_BURST
    # A steady 20/s goes through: one every 50 ms.
    got = sum(_passed(dev, 1, src, cookie, b.public, now + 2 + k / RATELIMIT_PACKETS_PER_SECOND)
              for k in range(40))
    assert got >= 39
    # Another source has its own budget.
    other = ("10.90.0.2", 40000)
    cookie2 = _cookie_for(dev, b.public, other, now + 4)
    assert _passed(dev, 50, other, cookie2, b.public, now + 4) == RATELIMIT_BURST


def test_rate_limit_groups_ipv6_by_64() -> None:
    net, a, b = pair(25)
    dev = b.device
    dev.force_under_load = True
    now = net.now
    s1, s2 = ("fd00:90:0:1::a", 40000), ("fd00:90:0:1:ffff::b", 40001)
    s3 = ("fd00:90:0:2::a", 40000)
    c1, c2, c3 = (_cookie_for(dev, b.public, s, now) for s in (s1, s2, s3))
    p1 = _passed(dev, 30, s1, c1, b.public, now)
    p2 = _passed(dev, 30, s2, c2, b.public, now)
    assert p1 + p2 == RATELIMIT_BURST  # one /64, one budget
    assert _passed(dev, 30, s3, c3, b.public, now) == RATELIMIT_BURST  # another /64


def test_mac2_is_bound_to_the_source_address_and_port() -> None:
    """A cookie earned at one address is worthless from another (spoofers cannot
    skip the cookie round trip)."""
    net, a, b = pair(26)
    dev = b.device
    dev.force_under_load = True
    cookie = _cookie_for(dev, b.public, ("10.91.0.1", 40000), net.now)
    for src in (("10.91.0.2", 40000), ("10.91.0.1", 40001)):
        acts = dev.decapsulate(junk_initiation(b.public, cookie=cookie), src, net.now, 0.0)
        assert _cookie_replies(acts), src
