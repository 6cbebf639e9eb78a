"""Handshake work done ahead while idle (Device.prepare, noise.PreparedInitiation,
noise.PreparedResponse)."""

from __future__ import annotations

from wgpy.control.apply import PREPARE_ON_SET, apply_set
from wgpy.control.uapi import PeerChange, SetRequest
from wgpy.protocol import messages, noise
from wgpy.protocol.constants import REKEY_TIMEOUT
from wgpy.protocol.crypto import dh
from wgpy.testing.memnet import A_IP4, B_IP4, MemNet, ipv4_packet, kind, pair


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
    handled = sum(p.public_key not in a.device._to_prepare for p in peers)
    # The responder pool's two generations count against the limit, then
    # each peer's initiation and response: two each.
    assert handled == 4
    for _ in range(10):
        if not a.device.prepare(limit=10):
            break
    # Low-order or not, every asked-for peer was handled exactly once.
    assert not a.device._to_prepare and not a.device.prepare_pending


def test_responder_uses_its_prepared_response_once_and_prepares_the_next() -> None:
    net, a, b = pair()
    pb = b.device.peers[a.public]
    b.device.want_prepared(pb)
    assert b.device.prepare() is False
    ready = pb.handshake.prepared_response
    assert ready is not None
    pool = list(b.device._ephemerals)
    net.send(a, ipv4_packet(A_IP4, B_IP4))
    net.deliver()
    assert len(b.delivered) == 1  # the session made with it works
    (resp,) = [w.data for w in net.sent if kind(w.data) == messages.MESSAGE_RESPONSE]
    assert messages.Response.unpack(resp).ephemeral == ready.ephemeral.public
    assert b.device._ephemerals == pool  # the pool was left for peers without one
    assert pb.handshake.prepared_response is None  # used at most once
    assert b.device.prepare_pending  # answering asked for the next
    b.device.prepare()
    nxt = pb.handshake.prepared_response
    assert nxt is not None and nxt.ephemeral.public != ready.ephemeral.public


def test_prepared_se_is_what_the_initiator_computes() -> None:
    # se from the responder's side, DH(e_r, S_i), equals the initiator's DH(s_i, E_r).
    net, a, b = pair()
    ready = noise.prepare_response(b.device.peers[a.public].handshake, b.device.rng)
    assert ready is not None
    assert ready.se == dh(a.private, ready.ephemeral.public)
    # A peer whose key is low-order (here: zero) gets none.
    assert noise.prepare_response(noise.Handshake(bytes(32)), b.device.rng) is None


def test_a_set_prepares_new_peers_and_new_endpoints_up_to_a_bound() -> None:
    net, a, b = pair()
    keys = [bytes([7, i >> 8, i & 0xFF]) + bytes(29) for i in range(PREPARE_ON_SET + 10)]
    req = SetRequest(peers=[PeerChange(public_key=k) for k in keys])
    apply_set(a.device, req, net.now, net.wall)
    assert len(a.device._to_prepare) == PREPARE_ON_SET
    # An endpoint on a known peer asks too; a change to neither does not.
    a.device._to_prepare.clear()
    pa = a.device.peers[b.public]
    apply_set(a.device, SetRequest(peers=[PeerChange(public_key=b.public,
                                                     persistent_keepalive_interval=0)]),
              net.now, net.wall)
    assert not a.device._to_prepare
    apply_set(a.device, SetRequest(peers=[PeerChange(public_key=b.public,
                                                     endpoint=("10.9.9.9", 9))]),
              net.now, net.wall)
    assert list(a.device._to_prepare) == [pa.public_key]


def test_a_responder_under_load_does_no_work_ahead() -> None:
    for under_load in (False, True):
        net, a, b = pair()
        b.device.force_under_load = under_load
        net.send(a, ipv4_packet(A_IP4, B_IP4))
        net.deliver()
        if under_load:  # the cookie round trip, then the retry with mac2
            net.advance(REKEY_TIMEOUT + 1)
        assert b.device.stats.responses_sent == 1
        assert (a.public in b.device._to_prepare) is not under_load
        # Only the response is wanted: the peer will likely initiate again.
        assert b.device._to_prepare.get(a.public) in (False, None)
