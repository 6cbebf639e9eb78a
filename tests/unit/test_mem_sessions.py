"""Two in-memory devices: handshakes, data, keypair rotation, replay, roaming.

Every test runs on MemNet's fake clock and seeded RNG (tests/memnet.py).
"""

from __future__ import annotations

import ipaddress

import pytest

from wgpy.protocol import Action, DropReason, LogEvent, messages
from wgpy.protocol.constants import MAX_STAGED_PACKETS, REKEY_TIMEOUT
from wgpy.protocol.crypto import clamp, public_key
from wgpy.testing.memnet import (
    A_EP,
    A_IP4,
    A_IP6,
    B_EP,
    B_IP4,
    B_IP6,
    DATA,
    INIT,
    RESP,
    MemNet,
    Node,
    Wire,
    ipv4_packet,
    ipv6_packet,
    p4,
    pair,
    peer_of,
    wires,
)


def establish(net: MemNet, a: Node, b: Node) -> None:
    """a starts a handshake by sending to b; afterwards both can send."""
    pkt = p4(A_IP4, B_IP4)
    net.send(a, pkt)
    net.deliver()
    assert b.delivered[-1] == pkt


def drops(node: Node, reason: DropReason) -> int:
    return node.device.stats.drops[reason]


# -- handshakes and data ---------------------------------------------------------


@pytest.mark.parametrize("starter", ["a", "b"])
def test_handshake_started_by_either_side(starter: str) -> None:
    net, a, b = pair()
    first, second = (a, b) if starter == "a" else (b, a)
    src, dst = (A_IP4, B_IP4) if starter == "a" else (B_IP4, A_IP4)
    pkt = p4(src, dst)
    net.send(first, pkt)
    assert [w.data[0] for w in net.in_flight] == [INIT]
    net.deliver()
    assert second.delivered == [pkt]
    # One round trip: initiation, response, then the staged packet.
    assert [w.data[0] for w in net.sent] == [INIT, RESP, DATA]
    for n in (a, b):
        assert n.device.stats.handshakes_completed == 1
    reply = p4(dst, src, 33)
    net.send(second, reply)
    net.deliver()
    assert first.delivered == [reply]
    # Both sides logged keys for the key log, with matching roles.
    assert len(a.keys) == len(b.keys) == 1
    assert a.keys[0].remote_static_public == b.public
    assert b.keys[0].remote_static_public == a.public


def test_data_both_ways_ipv4_and_ipv6() -> None:
    net, a, b = pair()
    establish(net, a, b)
    sent_a: list[bytes] = []
    sent_b: list[bytes] = []
    for i in range(5):
        for pkt in (p4(A_IP4, B_IP4, 20 + i), ipv6_packet(A_IP6, B_IP6, b"v6" * (i + 1))):
            net.send(a, pkt)
            sent_a.append(pkt)
        for pkt in (p4(B_IP4, A_IP4, 40 + i), ipv6_packet(B_IP6, A_IP6, b"6v" * (i + 3))):
            net.send(b, pkt)
            sent_b.append(pkt)
        net.deliver()
    assert b.delivered[1:] == sent_a
    assert a.delivered == sent_b
    assert a.device.stats.handshakes_completed == 1


def test_no_route_and_no_endpoint_are_dropped() -> None:
    net, a, b = pair(endpoints=False)
    net.send(a, p4(A_IP4, "10.77.0.1"))
    assert drops(a, DropReason.NO_ROUTE) == 1
    net.send(a, p4(A_IP4, B_IP4))
    assert drops(a, DropReason.NO_ENDPOINT) == 1
    net.send(a, b"\x00garbage")
    assert drops(a, DropReason.NOT_IP) == 1
    assert net.sent == []


def test_psk_matching_works() -> None:
    psk = bytes(range(32))
    net, a, b = pair(psk=psk)
    establish(net, a, b)
    assert a.keys[0].preshared_key == psk


def test_psk_mismatch_fails() -> None:
    net, a, b = pair()
    peer_of(a, b).preshared_key = b"\x01" * 32
    peer_of(b, a).preshared_key = b"\x02" * 32
    net.send(a, p4(A_IP4, B_IP4))
    net.deliver()
    # b answered (message 1 does not involve the PSK), a could not open it.
    assert [w.data[0] for w in net.sent] == [INIT, RESP]
    assert drops(a, DropReason.UNEXPECTED_RESPONSE) == 1
    assert b.delivered == [] and a.device.stats.handshakes_completed == 0
    # One side having a PSK and the other none fails too.
    net2, a2, b2 = pair()
    peer_of(a2, b2).preshared_key = b"\x01" * 32
    net2.send(a2, p4(A_IP4, B_IP4))
    net2.deliver()
    assert b2.delivered == []


# -- padding -------------------------------------------------------------------------


def _plain_len(w: Wire) -> int:
    return len(w.data) - messages.TRANSPORT_HEADER_SIZE - 16


@pytest.mark.parametrize(
    ("size", "padded"),
    [(20, 32), (21, 32), (32, 32), (33, 48), (1400, 1408), (1408, 1408),
     (1409, 1420), (1419, 1420), (1420, 1420)],
)
def test_padding_to_16_not_past_mtu(size: int, padded: int) -> None:
    net, a, b = pair()
    establish(net, a, b)
    assert a.device.mtu == 1420
    pkt = ipv4_packet(A_IP4, B_IP4, b"p" * (size - 20))
    net.send(a, pkt)
    w = net.in_flight[-1]
    net.deliver()
    assert _plain_len(w) == padded
    # The receiver strips the padding using the IP header's length.
    assert b.delivered[-1] == pkt


def test_keepalive_is_empty_and_unpadded() -> None:
    net, a, b = pair()
    establish(net, a, b)
    out: list[Action] = []
    peer_of(a, b).send_keepalive(net.now, net.wall, out)
    net.handle(a, out)
    assert [len(w.data) for w in net.in_flight] == [messages.TRANSPORT_MIN_SIZE]
    net.deliver()
    assert len(b.delivered) == 1  # only the first packet


# -- responder key confirmation and keypair rotation ---------------------------------


def test_responder_waits_for_key_confirmation() -> None:
    net, a, b = pair()
    # Lose everything a sends after its initiation: b gets no confirmation.
    net.filter = lambda w: not (w.src == A_EP and w.data[0] == DATA)
    net.send(a, p4(A_IP4, B_IP4))
    net.deliver()
    pb = peer_of(b, a)
    assert pb.keypairs.next is not None and pb.keypairs.current is None
    reply = p4(B_IP4, A_IP4, 50)
    net.send(b, reply)
    # b may not use `next` before the initiator spoke on it, and having just
    # answered a handshake it does not start one of its own (REKEY_TIMEOUT).
    assert [w for w in net.in_flight if w.src == B_EP] == []
    assert list(pb.staged) == [reply]
    net.filter = lambda w: True
    net.send(a, p4(A_IP4, B_IP4, 60))
    net.deliver()
    # The first data from a confirmed the keypair and flushed b's queue.
    assert pb.keypairs.current is not None and pb.keypairs.next is None
    assert a.delivered == [reply]
    assert b.device.stats.handshakes_completed == 1


def test_previous_current_next_rotation() -> None:
    net, a, b = pair()
    establish(net, a, b)
    pa, pb = peer_of(a, b), peer_of(b, a)
    k1a, k1b = pa.keypairs.current, pb.keypairs.current
    assert k1a is not None and k1b is not None and k1a.is_initiator and not k1b.is_initiator
    # A packet sealed with the first keypair, still in flight during the rekey.
    net.send(a, p4(A_IP4, B_IP4, 70))
    late = net.in_flight.pop()
    # A second handshake (forced), delivered except a's first data on it.
    net.advance(REKEY_TIMEOUT + 1)
    pa.expire_current_keypairs()
    net.filter = lambda w: not (w.src == A_EP and w.data[0] == DATA)
    net.send(a, p4(A_IP4, B_IP4, 71))
    net.deliver()
    k2a = pa.keypairs.current
    assert k2a is not None and k2a is not k1a
    assert pa.keypairs.previous is k1a and pa.keypairs.next is None
    k2b = pb.keypairs.next
    assert k2b is not None and pb.keypairs.current is k1b and pb.keypairs.previous is None
    assert k2b.local_index == k2a.remote_index
    # The late packet on the old keypair still decrypts at b.
    net.filter = lambda w: True
    net.inject(late.src, late.dst, late.data)
    assert b.delivered[-1] == p4(A_IP4, B_IP4, 70)
    # a's data on the new keypair confirms it: previous <- current <- next.
    net.send(a, p4(A_IP4, B_IP4, 72))
    net.deliver()
    assert pb.keypairs.current is k2b and pb.keypairs.previous is k1b
    assert pb.keypairs.next is None
    assert b.delivered[-1] == p4(A_IP4, B_IP4, 72)
    # b now sends on the new keypair.
    net.send(b, p4(B_IP4, A_IP4, 73))
    w = net.in_flight[-1]
    assert messages.TransportHeader.unpack(w.data).receiver == k2a.local_index
    net.deliver()
    assert a.delivered[-1] == p4(B_IP4, A_IP4, 73)


def test_third_handshake_retires_the_oldest_keypair() -> None:
    net, a, b = pair()
    establish(net, a, b)
    pa, pb = peer_of(a, b), peer_of(b, a)
    old = pa.keypairs.current
    assert old is not None
    for i in range(2):
        net.advance(REKEY_TIMEOUT + 1)
        pa.expire_current_keypairs()
        establish(net, a, b)
        assert i == 1 or pa.keypairs.previous is old
    assert old not in pa.keypairs.all()
    # Its index is free: a packet to it is an unknown index at a.
    hdr = messages.TransportHeader.pack(old.local_index, 99) + bytes(16)
    net.inject(B_EP, A_EP, hdr)
    assert drops(a, DropReason.UNKNOWN_INDEX) == 1
    assert len(pb.keypairs.all()) <= 3


# -- staged queue and simultaneous initiations ---------------------------------------


def test_staged_queue_is_bounded_oldest_dropped() -> None:
    net, a, b = pair()
    net.filter = lambda w: False  # b is unreachable for now
    pkts = [p4(A_IP4, B_IP4, i) for i in range(200)]
    for pkt in pkts:
        net.send(a, pkt)
    net.deliver()
    pa = peer_of(a, b)
    assert len(pa.staged) == MAX_STAGED_PACKETS
    assert drops(a, DropReason.QUEUE_FULL) == 200 - MAX_STAGED_PACKETS
    net.filter = lambda w: True
    net.advance(REKEY_TIMEOUT + 1)  # the retry gets through
    assert b.delivered == pkts[200 - MAX_STAGED_PACKETS :]
    assert not pa.staged


def test_simultaneous_initiations_converge() -> None:
    net, a, b = pair()
    pa_pkt, pb_pkt = p4(A_IP4, B_IP4, 1), p4(B_IP4, A_IP4, 2)
    net.send(a, pa_pkt)
    net.send(b, pb_pkt)
    assert [w.data[0] for w in net.in_flight] == [INIT, INIT]
    net.deliver()
    net.advance(3 * REKEY_TIMEOUT)
    assert b.delivered == [pa_pkt]
    assert a.delivered == [pb_pkt]
    # Afterwards traffic flows both ways on one session each.
    net.send(a, p4(A_IP4, B_IP4, 3))
    net.send(b, p4(B_IP4, A_IP4, 4))
    net.deliver()
    assert b.delivered[-1] == p4(A_IP4, B_IP4, 3)
    assert a.delivered[-1] == p4(B_IP4, A_IP4, 4)


# -- replay -------------------------------------------------------------------------


def test_replayed_transport_rejected() -> None:
    net, a, b = pair()
    establish(net, a, b)
    pkt = p4(A_IP4, B_IP4, 90)
    net.send(a, pkt)
    w = net.in_flight[-1]
    net.deliver()
    before = len(b.delivered)
    for _ in range(3):
        net.inject(w.src, w.dst, w.data)
    assert len(b.delivered) == before
    assert drops(b, DropReason.REPLAY) == 3
    # Out-of-order but unseen counters are still accepted.
    net.send(a, p4(A_IP4, B_IP4, 91))
    net.send(a, p4(A_IP4, B_IP4, 92))
    w1, w2 = net.in_flight[-2:]
    net.in_flight.clear()
    net.inject(w2.src, w2.dst, w2.data)
    net.inject(w1.src, w1.dst, w1.data)
    assert b.delivered[-2:] == [p4(A_IP4, B_IP4, 92), p4(A_IP4, B_IP4, 91)]


def test_replayed_initiation_rejected_by_timestamp() -> None:
    net, a, b = pair()
    establish(net, a, b)
    init = wires(net, a, INIT)[0]
    responses = len(wires(net, b, RESP))
    net.advance(1.0)
    net.inject(init.src, init.dst, init.data)
    assert drops(b, DropReason.REPLAYED_TIMESTAMP) == 1
    assert len(wires(net, b, RESP)) == responses
    # b's session with a is untouched: data still flows.
    net.send(a, p4(A_IP4, B_IP4, 5))
    net.deliver()
    assert b.delivered[-1] == p4(A_IP4, B_IP4, 5)


# -- roaming ------------------------------------------------------------------------


def test_roaming_only_after_authentication() -> None:
    net, a, b = pair()
    establish(net, a, b)
    pb = peer_of(b, a)
    assert pb.endpoint == A_EP
    attacker = ("10.66.0.1", 4444)
    net.send(a, p4(A_IP4, B_IP4, 80))
    good = net.in_flight.pop()
    # A forged transport message (valid index, garbage ciphertext).
    forged = good.data[:16] + bytes(len(good.data) - 16)
    net.inject(attacker, B_EP, forged)
    assert drops(b, DropReason.DECRYPT) == 1
    # Garbage handshake messages and a replayed initiation.
    net.inject(attacker, B_EP, b"\x01\0\0\0" + bytes(144))
    init = wires(net, a, INIT)[0]
    net.inject(attacker, B_EP, init.data)
    assert pb.endpoint == A_EP
    # A genuine packet replayed from the new address does not move it either.
    net.inject(A_EP, B_EP, good.data)
    net.inject(attacker, B_EP, good.data)
    assert pb.endpoint == A_EP
    # A fresh authenticated packet from a new address does.
    new_ep = ("10.0.0.99", 40000)
    net.send(a, p4(A_IP4, B_IP4, 81))
    fresh = net.in_flight.pop()
    net.inject(new_ep, B_EP, fresh.data)
    assert pb.endpoint == new_ep
    net.send(b, p4(B_IP4, A_IP4, 82))
    assert net.in_flight[-1].dst == new_ep


# -- inner packets --------------------------------------------------------------------


def test_inner_source_must_be_an_allowed_ip_of_the_sender() -> None:
    net, a, b = pair()
    establish(net, a, b)
    for spoofed in (p4("10.9.0.99", B_IP4), ipv6_packet("fd00:9::99", B_IP6),
                    p4(B_IP4, B_IP4)):
        net.send(a, spoofed)  # a routes by destination only
        net.deliver()
    assert drops(b, DropReason.DISALLOWED_SOURCE) == 3
    assert len(b.delivered) == 1
    # An address owned by a third peer is not a's either.
    third = b.device.add_peer(public_key(clamp(b"\x33" * 32)))
    b.device.allowed_ips.insert(ipaddress.ip_network("10.9.0.3/32"), third)
    net.send(a, p4("10.9.0.3", B_IP4))
    net.deliver()
    assert drops(b, DropReason.DISALLOWED_SOURCE) == 4


def test_inner_garbage_dropped_and_counted() -> None:
    net, a, b = pair()
    establish(net, a, b)
    pa = peer_of(a, b)
    kp = pa.keypairs.current
    assert kp is not None
    bad_inner = [
        b"\x50" + bytes(31),                       # IP version 5
        ipv4_packet(A_IP4, B_IP4)[:2] + (200).to_bytes(2, "big") + ipv4_packet(A_IP4, B_IP4)[4:],
        ipv4_packet(A_IP4, B_IP4)[:2] + (10).to_bytes(2, "big") + ipv4_packet(A_IP4, B_IP4)[4:],
        ipv6_packet(A_IP6, B_IP6)[:4] + (500).to_bytes(2, "big") + ipv6_packet(A_IP6, B_IP6)[6:],
        b"\x45" + bytes(10),                       # truncated IPv4 header
    ]
    for inner in bad_inner:
        dg = pa._encrypt(kp, inner)
        net.inject(A_EP, B_EP, dg)
    s = b.device.stats.drops
    assert s[DropReason.NOT_IP] == 2
    assert s[DropReason.BAD_INNER_LENGTH] == 3
    assert len(b.delivered) == 1


def test_malformed_datagrams_dropped_and_counted() -> None:
    net, a, b = pair()
    establish(net, a, b)
    junk = [
        b"", b"\x01", b"\x04\0\0", b"\x05\0\0\0" + bytes(60), b"\x01\0\0\0" + bytes(10),
        b"\x01\0\0\0" + bytes(145), b"\x02\0\0\0" + bytes(87), b"\x03\0\0\0" + bytes(61),
        b"\x04\0\0\0" + bytes(27), b"\x01\x01\0\0" + bytes(144), b"\xff" * 148,
    ]
    for d in junk:
        # No answer and no delivery: at most a (rate-limited) log line.
        acts = net.inject(A_EP, B_EP, d)
        assert all(isinstance(x, LogEvent) and x.rate_limited for x in acts), acts
    assert drops(b, DropReason.MALFORMED) == len(junk)
    # Well-formed but unauthentic messages of each type.
    net.inject(A_EP, B_EP, b"\x01\0\0\0" + bytes(144))            # bad mac1
    net.inject(A_EP, B_EP, b"\x02\0\0\0" + bytes(88))             # bad mac1
    net.inject(A_EP, B_EP, b"\x03\0\0\0" + bytes(60))             # unknown index
    net.inject(A_EP, B_EP, b"\x04\0\0\0" + bytes(60))             # unknown index
    s = b.device.stats.drops
    assert s[DropReason.BAD_MAC1] == 2 and s[DropReason.UNKNOWN_INDEX] == 2
    # Still working.
    net.send(a, p4(A_IP4, B_IP4, 6))
    net.deliver()
    assert b.delivered[-1] == p4(A_IP4, B_IP4, 6)


# -- configuration ----------------------------------------------------------------------


LOW_ORDER_PUBLIC = bytes.fromhex(
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
)


def test_peer_with_low_order_public_key_sends_nothing() -> None:
    net = MemNet()
    a = net.node("a", A_EP)
    peer = a.device.add_peer(LOW_ORDER_PUBLIC)
    peer.endpoint = B_EP
    a.device.allowed_ips.insert(ipaddress.ip_network("10.9.0.2/32"), peer)
    for i in range(3):
        net.send(a, p4(A_IP4, B_IP4, i))
    net.advance(200)
    assert net.sent == []
    assert drops(a, DropReason.LOW_ORDER_KEY) >= 1
    # Nor does an initiation claiming that key get anywhere at a responder.
    for key in (bytes(32), (1).to_bytes(32, "little")):
        p = a.device.add_peer(key)
        assert p.handshake.precomputed_static_static is None


def test_removing_a_peer_frees_its_indices_and_routes() -> None:
    net, a, b = pair()
    establish(net, a, b)
    pb = peer_of(b, a)
    indices = {k.local_index for k in pb.keypairs.all()}
    assert indices and all(i in b.device.indices for i in indices)
    b.device.remove_peer(a.public)
    assert b.device.indices == {}
    assert a.public not in b.device.peers
    net.send(a, p4(A_IP4, B_IP4, 7))
    net.deliver()
    assert drops(b, DropReason.UNKNOWN_INDEX) == 1
    net.send(b, p4(B_IP4, A_IP4))
    assert drops(b, DropReason.NO_ROUTE) == 1
    # Its timers are gone: nothing is sent to a any more.
    n = len(wires(net, b))
    net.advance(700)
    assert len(wires(net, b)) == n
    # A new initiation from a: unknown peer now.
    net.advance(REKEY_TIMEOUT)
    peer_of(a, b).expire_current_keypairs()
    net.send(a, p4(A_IP4, B_IP4, 8))
    net.deliver()
    assert drops(b, DropReason.UNKNOWN_PEER) >= 1


def test_handshake_indices_do_not_leak() -> None:
    net, a, b = pair()
    establish(net, a, b)
    pa = peer_of(a, b)
    for _ in range(6):
        net.advance(REKEY_TIMEOUT + 1)
        pa.expire_current_keypairs()
        establish(net, a, b)
    # At most previous/current/next keypairs plus one pending handshake.
    assert len(a.device.indices) <= 4
    assert len(b.device.indices) <= 4
    assert {e.keypair for e in a.device.indices.values()} <= set(pa.keypairs.all()) | {None}


def test_changing_the_private_key() -> None:
    net, a, b = pair()
    establish(net, a, b)
    # Setting the same key again changes nothing.
    b.device.set_private_key(b.private)
    net.send(b, p4(B_IP4, A_IP4, 1))
    net.deliver()
    assert a.delivered == [p4(B_IP4, A_IP4, 1)]
    # A new key: b's sessions stop sending; a still knows b's old key, so
    # the handshakes fail until a is told the new one.
    new_private = clamp(b"\x42" * 32)
    b.device.set_private_key(new_private)
    net.advance(REKEY_TIMEOUT + 1)
    net.send(b, p4(B_IP4, A_IP4, 2))
    assert [w.data[0] for w in net.in_flight] == [INIT]
    net.deliver()
    assert drops(a, DropReason.UNKNOWN_PEER) == 1
    assert a.delivered == [p4(B_IP4, A_IP4, 1)]
    # a learns b's new public key.
    a.device.remove_peer(b.public)
    b.public, b.private = public_key(new_private), new_private
    pa = a.device.add_peer(b.public)
    pa.endpoint = B_EP
    a.device.allowed_ips.insert(ipaddress.ip_network(f"{B_IP4}/32"), pa)
    net.advance(REKEY_TIMEOUT + 1)
    net.deliver()
    assert a.delivered[-1] == p4(B_IP4, A_IP4, 2)
    # Setting our own key to a peer's public key removes that peer.
    a_public_before = a.public
    b.device.set_private_key(a.private)
    assert a_public_before not in b.device.peers


def test_changing_the_private_key_abandons_a_pending_handshake() -> None:
    net, a, b = pair()
    net.send(a, p4(A_IP4, B_IP4, 1))  # a's initiation is in flight
    init = net.in_flight.pop()
    pa = peer_of(a, b)
    pending = pa.handshake.local_index
    assert pending in a.device.indices
    a.device.set_private_key(clamp(b"\x17" * 32))
    # The old handshake's index is freed; b's response to it (mac1'd for a's
    # old key) is dropped and completes nothing.
    assert pending not in a.device.indices
    assert pa.handshake.local_index == 0
    net.inject(init.src, init.dst, init.data)
    resp = [w for w in net.in_flight if w.dst == A_EP]
    net.deliver()
    assert resp
    assert drops(a, DropReason.BAD_MAC1) + drops(a, DropReason.UNKNOWN_INDEX) == len(resp)
    assert a.device.stats.handshakes_completed == 0
