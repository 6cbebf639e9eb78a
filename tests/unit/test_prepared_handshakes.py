"""Handshake work done ahead while idle (Device.prepare, noise.PreparedInitiation)."""

from __future__ import annotations

from memnet import A_IP4, B_IP4, MemNet, ipv4_packet, kind, pair
from wgpy.protocol import messages


def _initiations(net: MemNet) -> list[bytes]:
    return [w.data for w in net.in_flight if kind(w.data) == messages.MESSAGE_INITIATION]


def test_prepared_initiation_is_used_once_and_the_session_works() -> None:
    net, a, b = pair()
    pa = a.device.peers[b.public]
    a.device.want_prepared(pa)
    assert a.device.prepare_pending
    assert a.device.prepare() is False  # all done within one batch
    prepared = pa.handshake.prepared
    assert prepared is not None
    net.send(a, ipv4_packet(A_IP4, B_IP4))
    (init,) = _initiations(net)
    assert messages.Initiation.unpack(init).ephemeral == prepared.ephemeral.public
    assert pa.handshake.prepared is None  # used at most once
    net.deliver()
    assert len(b.delivered) == 1  # the staged packet went through the session
    # Sending it asked for the next one (a retry or the rekey will want it).
    assert a.device.prepare_pending


def test_new_private_key_discards_prepared_initiations() -> None:
    net, a, b = pair()
    pa = a.device.peers[b.public]
    a.device.want_prepared(pa)
    a.device.prepare()
    old = pa.handshake.prepared
    assert old is not None
    a.device.set_private_key(bytes(range(1, 33)))
    assert pa.handshake.prepared is None
    # A stale one (made for another key) is refused even if it were put back.
    pa.handshake.prepared = old
    net.send(a, ipv4_packet(A_IP4, B_IP4))
    (init,) = _initiations(net)
    assert messages.Initiation.unpack(init).ephemeral != old.ephemeral.public


def test_responder_takes_pooled_ephemerals_and_asks_for_more() -> None:
    net, a, b = pair()
    b.device.prepare()
    pool = list(b.device._ephemerals)
    assert len(pool) == 2 and not b.device.prepare_pending
    net.send(a, ipv4_packet(A_IP4, B_IP4))
    net.deliver()
    assert len(b.delivered) == 1
    responses = [w.data for w in net.sent if kind(w.data) == messages.MESSAGE_RESPONSE]
    assert messages.Response.unpack(responses[0]).ephemeral == pool[-1].public
    assert len(b.device._ephemerals) == 1 and b.device.prepare_pending


def test_prepare_is_bounded_per_call() -> None:
    net, a, b = pair()
    peers = [a.device.add_peer(bytes([9, i]) + bytes(30)) for i in range(1, 40)]
    for p in peers:
        a.device.want_prepared(p)
    assert a.device.prepare(limit=10) is True
    done = sum(p.handshake.prepared is not None for p in peers)
    assert done == 8  # the responder pool's two generations count against the limit
    for _ in range(10):
        if not a.device.prepare(limit=10):
            break
    # Low-order or not, every asked-for peer was handled exactly once.
    assert not a.device._to_prepare and not a.device.prepare_pending
