"""The relay's sans-IO table: allocation, limits, expiry, learning mappings, forwarding."""

from __future__ import annotations

import ipaddress

import dns.message
import dns.rcode
import dns.update
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.discovery.records import Names
from wgpy.discovery.registry import PeerView, Registry, Snapshot, Source
from wgpy.discovery.relay import Refusal, RelayRefused, RelayTable

KA, KB, KC, KD = (bytes([i]) * 32 for i in (1, 2, 3, 4))
PUBLIC = {KA: "10.201.0.2", KB: "10.202.0.2", KC: "10.203.0.2", KD: "fd00:204::2"}
NAMES = Names.for_zone("wg.example")


def table(**kw: object) -> RelayTable:
    t = RelayTable({4: "10.200.0.2"}, **kw)  # type: ignore[arg-type]
    t.observe(PUBLIC, 0.0)
    return t


def bind_all(t: RelayTable) -> None:
    for side in t.unbound():
        t.bound(side)


def test_a_pair_gets_two_ports_and_the_same_allocation_from_either_side() -> None:
    t = table()
    a = t.request(KA, KB, 0.0)
    assert t.request(KB, KA, 1.0) is a
    pa, pb = a.side(KA).port, a.side(KB).port
    assert pa != pb and {pa, pb} <= set(t.ports)
    assert t.endpoint_for(KA, KB) is None  # not bound yet: not published
    bind_all(t)
    assert t.endpoint_for(KA, KB) == (4, pa) and t.endpoint_for(KB, KA) == (4, pb)


def test_forwarding_learns_each_side_from_its_own_public_address_only() -> None:
    t = table()
    alloc = t.request(KA, KB, 0.0)
    bind_all(t)
    sa, sb = alloc.side(KA), alloc.side(KB)
    # A's first datagram: A's mapping is learned, B's is not known yet: dropped.
    assert t.forward(sa, ("10.201.0.2", 40001), 1, 148, 1.0) is None
    assert t.stats["drop.peer_unknown"] == 1
    # B (behind a symmetric NAT: a new port for the relay) speaks: forwarded to A.
    assert t.forward(sb, ("10.202.0.2", 61000), 3, 300, 2.0) == ("10.201.0.2", 40001)
    assert t.forward(sa, ("10.201.0.2", 40001), 2, 200, 2.0) == ("10.202.0.2", 61000)
    # A third party cannot redirect A's side, whatever port it uses.
    assert t.forward(sa, ("10.203.0.2", 40001), 5, 500, 3.0) is None
    assert t.stats["drop.foreign_source"] == 5 and sa.mapping == ("10.201.0.2", 40001)
    # A roams within its address (its NAT picked a new port): followed.
    assert t.forward(sa, ("10.201.0.2", 40002), 1, 100, 4.0) == ("10.202.0.2", 61000)
    assert t.forward(sb, ("10.202.0.2", 61000), 1, 100, 4.0) == ("10.201.0.2", 40002)
    assert t.stats["forwarded.datagrams"] == 7 and sa.datagrams == 3 and sb.datagrams == 4


def test_a_peer_that_moves_to_another_address_is_learned_again() -> None:
    t = table()
    alloc = t.request(KA, KB, 0.0)
    bind_all(t)
    sa, sb = alloc.side(KA), alloc.side(KB)
    t.forward(sa, ("10.201.0.2", 1), 1, 1, 0.0)
    t.forward(sb, ("10.202.0.2", 2), 1, 1, 0.0)
    t.observe({**PUBLIC, KA: "10.209.0.2"}, 1.0)  # the registry sees A elsewhere now
    assert sa.mapping is None and sa.public_ip == "10.209.0.2"
    assert t.forward(sb, ("10.202.0.2", 2), 1, 1, 1.0) is None  # A not learned again yet
    assert t.forward(sa, ("10.201.0.2", 1), 1, 1, 1.0) is None  # old address: foreign now
    assert t.forward(sa, ("10.209.0.2", 7), 1, 1, 1.0) == ("10.202.0.2", 2)


def test_allocations_expire_when_unused_and_with_their_peers() -> None:
    t = table(idle=30.0)
    alloc = t.request(KA, KB, 0.0)
    bind_all(t)
    t.forward(alloc.side(KA), ("10.201.0.2", 1), 1, 1, 20.0)  # use keeps it alive
    assert t.observe(PUBLIC, 45.0) == [] and t.allocations
    assert t.observe(PUBLIC, 50.0) == [alloc] and not t.allocations and not t.by_port
    other = t.request(KA, KC, 60.0)
    gone = {k: v for k, v in PUBLIC.items() if k != KC}
    assert t.observe(gone, 61.0) == [other]
    assert t.stats["expired"] == 1 and t.stats["ended.peer_gone"] == 1


def test_limits_per_peer_and_in_total() -> None:
    t = table(max_per_peer=2, max_total=3)
    t.request(KA, KB, 0.0)
    t.request(KA, KC, 0.0)
    with pytest.raises(RelayRefused) as e:
        t.request(KA, KD, 0.0)
    assert e.value.reason is Refusal.PEER_LIMIT
    t.request(KB, KC, 0.0)
    with pytest.raises(RelayRefused) as e:
        t.request(KC, KD, 0.0)
    assert e.value.reason is Refusal.TOTAL_LIMIT


def test_refusals_for_self_unconnected_and_missing_family() -> None:
    t = table()
    for me, peer, reason in ((KA, KA, Refusal.SAME_PEER),
                             (KA, bytes(32), Refusal.NOT_CONNECTED),
                             (KA, KD, Refusal.NO_FAMILY)):  # KD is IPv6, the relay IPv4 only
        with pytest.raises(RelayRefused) as e:
            t.request(me, peer, 0.0)
        assert e.value.reason is reason
    assert not t.allocations and not t.by_port


def test_ports_run_out_and_unbindable_ports_are_skipped() -> None:
    t = RelayTable({4: "10.200.0.2"}, ports=range(40000, 40004))
    t.observe(PUBLIC, 0.0)
    first = t.request(KA, KB, 0.0)
    side = first.side(KA)
    t.bind_failed(side)  # the shell could not bind it: the allocation ends
    assert not t.allocations
    again = t.request(KA, KB, 1.0)
    assert side.port not in {s.port for s in again.sides.values()}
    with pytest.raises(RelayRefused) as e:
        t.request(KA, KC, 1.0)  # 3 usable ports: one pair fits, not two
    assert e.value.reason is Refusal.NO_PORT


def test_an_ipv6_relay_address_bridges_families() -> None:
    t = RelayTable({4: "10.200.0.2", 6: "fd00:200::2"})
    t.observe(PUBLIC, 0.0)
    alloc = t.request(KA, KD, 0.0)
    assert alloc.side(KA).family == 4 and alloc.side(KD).family == 6


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([KA, KB, KC]), st.sampled_from([KA, KB, KC, KD]),
                          st.floats(0, 500)), max_size=30))
def test_any_sequence_keeps_the_table_consistent(ops: list[tuple[bytes, bytes, float]]) -> None:
    t = RelayTable({4: "10.200.0.2"}, ports=range(40000, 40010), idle=50, max_per_peer=2,
                   max_total=3)
    now = 0.0
    for me, peer, dt in ops:
        now += dt
        t.observe(PUBLIC, now)
        try:
            t.request(me, peer, now)
        except RelayRefused:
            pass
        ports = [(s.family, s.port) for a in t.allocations.values() for s in a.sides.values()]
        assert len(ports) == len(set(ports)) == len(t.by_port)
        assert len(t.allocations) <= 3
        for k in (KA, KB, KC):
            assert sum(1 for p in t.allocations if k in p) <= 2


# -- relay requests through the registry --------------------------------------------

SNAP = Snapshot([PeerView(KA, ("10.201.0.2", 40000), ("10.99.0.1/32",)),
                 PeerView(KB, ("10.202.0.2", 51820), ("10.99.0.2/32",)),
                 PeerView(KC, None, ("10.99.0.3/32",))])
TUNNEL_A = Source(ipaddress.ip_address("10.99.0.1"), 5353, via_tunnel=True)


def relay_request(me: bytes, peer: bytes, port: int = 0,
                  target: str | None = None) -> dns.update.UpdateMessage:
    msg = dns.update.UpdateMessage(NAMES.zone)
    msg.add(NAMES.relay_instance(me, peer), 30, "SRV",
            f"0 0 {port} {target or NAMES.relay_host}")
    return msg


def send(reg: Registry, msg: dns.message.Message, source: Source = TUNNEL_A) -> int:
    wire = reg.handle_wire(msg.to_wire(), source, SNAP, 0.0)
    assert wire is not None
    return dns.message.from_wire(wire).rcode()


def registry() -> Registry:
    t = RelayTable({4: "10.200.0.2"})
    reg = Registry(NAMES, relay=t)
    reg.observe(SNAP, 0.0)
    return reg


def test_a_request_through_the_tunnel_gets_a_published_relay_endpoint() -> None:
    reg = registry()
    assert reg.relay is not None
    assert send(reg, relay_request(KA, KB)) == dns.rcode.NOERROR
    q = dns.message.make_query(NAMES.relay_instance(KA, KB), "SRV")
    r = dns.message.from_wire(reg.handle_wire(q.to_wire(), TUNNEL_A, SNAP, 0.0) or b"")
    assert r.rcode() == dns.rcode.NXDOMAIN  # until the shell has bound the ports
    bind_all(reg.relay)
    for me, peer in ((KA, KB), (KB, KA)):
        q = dns.message.make_query(NAMES.relay_instance(me, peer), "SRV")
        r = dns.message.from_wire(reg.handle_wire(q.to_wire(), TUNNEL_A, SNAP, 0.0) or b"")
        port = reg.relay.endpoint_for(me, peer)
        assert port is not None
        assert [rd.to_text() for rd in r.answer[0]] == [f"0 0 {port[1]} {NAMES.relay_host}"]
        assert r.additional[0].name == NAMES.relay_host
        assert [rd.to_text() for rd in r.additional[0]] == ["10.200.0.2"]


@pytest.mark.parametrize("msg,source,why", [
    (relay_request(KA, KB), Source(ipaddress.ip_address("10.99.0.1"), 1), "not via tunnel"),
    (relay_request(KB, KA), TUNNEL_A, "for another key"),
    (relay_request(KA, KC), TUNNEL_A, "peer without endpoint"),
    (relay_request(KA, bytes(32)), TUNNEL_A, "not a peer"),
    (relay_request(KA, KB, port=5000), TUNNEL_A, "asks for a port"),
    (relay_request(KA, KB, target="evil.example."), TUNNEL_A, "another target"),
])
def test_bad_relay_requests_are_refused_and_change_nothing(
    msg: dns.update.UpdateMessage, source: Source, why: str
) -> None:
    reg = registry()
    assert reg.relay is not None
    assert send(reg, msg, source) == dns.rcode.REFUSED, why
    assert not reg.relay.allocations and reg.stats["relay.refused"] == 1
    assert reg.last_refusal


def test_a_registry_without_relay_refuses_requests() -> None:
    reg = Registry(NAMES)
    assert send(reg, relay_request(KA, KB)) == dns.rcode.REFUSED
    assert "no relay" in reg.last_refusal
