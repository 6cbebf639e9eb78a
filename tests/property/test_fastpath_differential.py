"""Hypothesis: batching changes nothing observable.  ``encapsulate``/
``decapsulate`` are the batch functions called with one packet; this checks
that settling per batch (timers, endpoint, counters applied once per peer)
gives what settling per packet gives.

Two identical MemNets (same seed) get the same traffic; one goes through
``encapsulate``/``decapsulate`` packet by packet, the other through the batch
calls.  Without time passing the wire bytes must be identical (same counters,
padding, ciphertext); in every case the inner packets delivered and the drop
counts must be.  (Once time passes, the wire bytes are not compared: a batch
runs its per-peer timer hooks when it settles, after all its packets, so
the timers' actions can interleave differently with the data.)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.protocol import Action
from wgpy.testing.memnet import (
    A_EP,
    A_IP4,
    A_IP6,
    B_EP,
    B_IP4,
    B_IP6,
    MemNet,
    Node,
    Wire,
    ipv4_packet,
    ipv6_packet,
    pair,
)


def deliver_batched(net: MemNet) -> None:
    """Deliver in-flight datagrams in runs of the same (src, dst), as GRO would."""
    rounds = 0
    while net.in_flight and rounds < 1000:
        rounds += 1
        first = net.in_flight[0]
        run = []
        while net.in_flight and (net.in_flight[0].src, net.in_flight[0].dst) == (
            first.src,
            first.dst,
        ):
            w = net.in_flight.pop(0)
            if net.filter(w):
                run.append(w.data)
        if run and first.dst in net.nodes:
            net.inject_batch(first.src, first.dst, run)


_pkt = st.tuples(st.booleans(), st.integers(0, 1380), st.sampled_from(["ok", "spoof", "bad"]))
_step = st.one_of(
    st.tuples(st.just("send"), st.sampled_from("ab"), st.lists(_pkt, min_size=1, max_size=12)),
    st.tuples(st.just("replay"), st.integers(0, 10_000), st.integers(1, 4)),
    st.tuples(st.just("junk"), st.binary(min_size=0, max_size=80), st.none()),
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 2000)),
    st.tuples(st.just("advance"), st.floats(0.0, 40.0), st.none()),
)


def _inner(node: str, spec: tuple[bool, int, str], i: int) -> bytes:
    v4, size, kind = spec
    s4, d4, s6, d6 = (A_IP4, B_IP4, A_IP6, B_IP6) if node == "a" else (B_IP4, A_IP4, B_IP6, A_IP6)
    if kind == "spoof":
        s4, s6 = "10.9.9.9", "fd00:9::99"
    payload = bytes([i & 0xFF]) * size
    pkt = ipv4_packet(s4, d4, payload) if v4 else ipv6_packet(s6, d6, payload)
    if kind == "bad":  # an IP header claiming more bytes than there are
        pkt = pkt[:2] + (len(pkt) + 9).to_bytes(2, "big") + pkt[4:] if v4 else (
            pkt[:4] + (len(pkt)).to_bytes(2, "big") + pkt[6:]
        )
    return pkt


def _node(net: MemNet, name: str) -> Node:
    return net.nodes[A_EP if name == "a" else B_EP]


def _state(net: MemNet) -> tuple[object, ...]:
    return tuple(
        (tuple(n.delivered), Counter({k: v for k, v in n.device.stats.drops.items() if v}))
        for n in net.nodes.values()
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(_step, min_size=1, max_size=25), st.integers(0, 500))
def test_batch_paths_match_single_paths(steps: list[tuple[Any, ...]], seed: int) -> None:
    single, _, _ = pair(seed=seed)
    batch, _, _ = pair(seed=seed)
    timeless = True
    for n_step, (op, x, y) in enumerate(steps):
        if op == "send":
            pkts = [_inner(x, spec, i) for i, spec in enumerate(y)]
            for p in pkts:
                single.send(_node(single, x), p)
            batch.send_batch(_node(batch, x), pkts)
        elif op in ("replay", "flip") and single.sent and timeless:
            # Only while the two nets' wire histories are identical (see below).
            for net in (single, batch):
                if not net.sent:
                    continue
                w = net.sent[x % len(net.sent)]
                data = w.data
                if op == "flip":
                    i = y % len(data)
                    data = data[:i] + bytes([data[i] ^ 0x20]) + data[i + 1 :]
                    net.in_flight.append(Wire(w.src, w.dst, data, net.now))
                else:
                    for _ in range(y):
                        net.in_flight.append(Wire(w.src, w.dst, data, net.now))
        elif op == "junk":
            for net in (single, batch):
                net.in_flight.append(Wire(A_EP, B_EP, x, net.now))
        elif op == "advance":
            timeless = False
            single.advance(x, step=5.0)
            batch.advance(x, step=5.0)
            # advance() delivers one by one.  From here the histories may differ
            # in when timer actions go out: decapsulate_batch runs the timer
            # hooks once a batch settles, decapsulate after each packet.
        single.deliver()
        deliver_batched(batch)
        if timeless:
            assert [w.data for w in single.sent] == [w.data for w in batch.sent], n_step
        assert _state(single) == _state(batch), n_step


def test_batch_of_mixed_receivers_and_sources() -> None:
    """A hand case: one batch holding data, a keepalive, a replay, garbage and a
    handshake message, in that order, is processed in order."""
    single, a1, b1 = pair(seed=5)
    batch, a2, b2 = pair(seed=5)
    for net, a in ((single, a1), (batch, a2)):
        net.send(a, ipv4_packet(A_IP4, B_IP4, b"first"))
        net.deliver()
    for net, a in ((single, a1), (batch, a2)):
        for i in range(3):
            net.send(a, ipv4_packet(A_IP4, B_IP4, b"x%d" % i))
        out: list[Action] = []
        a.device.peers[_node(net, "b").public].send_keepalive(net.now, net.wall, out)
        net.handle(a, out)
    for net in (single, batch):
        flight = [w.data for w in net.in_flight]
        net.in_flight.clear()
        init = next(w.data for w in net.sent if w.data[0] == 1)
        datagrams = flight + [flight[0], b"\x04\0\0\0" + bytes(40), init, flight[1]]
        if net is single:
            for d in datagrams:
                net.inject(A_EP, B_EP, d)
        else:
            net.inject_batch(A_EP, B_EP, datagrams)
    assert b1.delivered == b2.delivered
    assert b1.device.stats.drops == b2.device.stats.drops
    assert b1.delivered[1:] == [ipv4_packet(A_IP4, B_IP4, b"x%d" % i) for i in range(3)]
