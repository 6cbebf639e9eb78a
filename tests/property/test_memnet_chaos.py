"""Hypothesis drives two devices through random traffic, loss, reordering,
duplication and time jumps.  Invariants: nothing raises, the device's timer
is never later than a peer's, tables stay bounded, and once the network is
healed traffic flows both ways again."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.protocol import Action
from wgpy.protocol.constants import MAX_STAGED_PACKETS, REKEY_TIMEOUT
from wgpy.testing.memnet import (
    A_IP4,
    A_IP6,
    B_IP4,
    B_IP6,
    MemNet,
    Wire,
    ipv4_packet,
    ipv6_packet,
    pair,
)

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from("ab"), st.booleans(), st.integers(0, 1400)),
        st.tuples(st.just("advance"), st.floats(0.0, 200.0), st.none(), st.none()),
        st.tuples(st.just("loss"), st.floats(0.0, 1.0), st.none(), st.none()),
        st.tuples(st.just("shuffle"), st.integers(0, 2**32), st.none(), st.none()),
        st.tuples(st.just("dup"), st.none(), st.none(), st.none()),
        st.tuples(st.just("keepalive"), st.sampled_from("ab"), st.integers(0, 30), st.none()),
    ),
    max_size=40,
)


def _check_invariants(net: MemNet) -> None:
    for node in net.nodes.values():
        dev = node.device
        nd = dev.next_deadline()
        for peer in dev.peers.values():
            pd = peer.timers.next_deadline()
            if pd is not None:
                assert nd is not None and nd <= pd, (nd, pd)
            assert len(peer.staged) <= MAX_STAGED_PACKETS
            assert len(peer.keypairs.all()) <= 3
        # previous/current/next keypairs of each peer plus one pending handshake.
        assert len(dev.indices) <= 4 * len(dev.peers)
        assert len(dev._heap) < 200


@settings(max_examples=100, deadline=None)
@given(OPS, st.integers(0, 1000))
def test_random_schedules_keep_invariants_and_recover(
    ops: list[tuple[Any, ...]], seed: int
) -> None:
    net, a, b = pair(seed=seed)
    rnd = random.Random(seed)
    loss = 0.0
    net.filter = lambda w: rnd.random() >= loss
    nodes = {"a": (a, A_IP4, B_IP4, A_IP6, B_IP6), "b": (b, B_IP4, A_IP4, B_IP6, A_IP6)}
    for op, x, y, z in ops:
        if op == "send":
            node, s4, d4, s6, d6 = nodes[x]
            size = max(z, 40)
            if y:
                pkt = ipv4_packet(s4, d4, bytes(size - 20))
            else:
                pkt = ipv6_packet(s6, d6, bytes(size - 40))
            net.send(node, pkt)
        elif op == "advance":
            net.advance(x, step=5.0)
        elif op == "loss":
            loss = x
        elif op == "shuffle":
            random.Random(x).shuffle(net.in_flight)
        elif op == "dup":
            net.in_flight.extend(Wire(w.src, w.dst, w.data, w.time) for w in list(net.in_flight))
        elif op == "keepalive":
            node = nodes[x][0]
            other = b if node is a else a
            out: list[Action] = []
            node.device.peers[other.public].set_persistent_keepalive(y, net.now, net.wall, out)
            net.handle(node, out)
        if rnd.random() < 0.7:
            net.deliver()
        _check_invariants(net)
    # Heal the network: within a couple of handshake timeouts both directions work.
    loss = 0.0
    net.deliver()
    na, nb = len(a.delivered), len(b.delivered)
    pa = ipv4_packet(A_IP4, B_IP4, b"final-a")
    pb = ipv4_packet(B_IP4, A_IP4, b"final-b")
    for _ in range(4):
        net.send(a, pa)
        net.send(b, pb)
        net.deliver()
        net.advance(REKEY_TIMEOUT + 1, step=5.0)
        if pa in b.delivered[nb:] and pb in a.delivered[na:]:
            break
    assert pa in b.delivered[nb:]
    assert pb in a.delivered[na:]
    _check_invariants(net)
