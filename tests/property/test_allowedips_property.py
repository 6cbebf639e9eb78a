"""Hypothesis: the allowed-IPs trie against a naive longest-prefix list.

Addresses are drawn from a few close clusters so prefixes nest, overlap and
split each other; every operation (insert, move to another peer, remove,
remove_peer) is mirrored in a dict {network: peer}, and after each one the
trie must route like the dict at the interesting addresses.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.protocol.allowedips import AllowedIPs

Net = ipaddress.IPv4Network | ipaddress.IPv6Network

PEERS = ["p0", "p1", "p2", "p3"]
Op = tuple[str, object, str]


def _addr(bits: int, clusters: list[int]) -> st.SearchStrategy[int]:
    # A cluster base plus a small offset, or a single flipped bit.
    base = st.sampled_from(clusters)
    small = st.builds(lambda b, o: (b + o) % (1 << bits), base, st.integers(0, 300))
    flipped = st.builds(lambda b, i: b ^ (1 << i), base, st.integers(0, bits - 1))
    return st.one_of(small, flipped, st.integers(0, (1 << bits) - 1))


V4_CLUSTERS = [0x0A000000, 0x0A000100, 0xC0A80000, 0xFFFFFF00, 0]
V6_CLUSTERS = [0xFD00 << 112, (0xFD00 << 112) | (1 << 64), (0x2001_0DB8 << 96), (1 << 128) - 256]


def _net(bits: int, clusters: list[int]) -> st.SearchStrategy[Net]:
    cls = ipaddress.IPv4Network if bits == 32 else ipaddress.IPv6Network
    cidrs = st.one_of(st.integers(0, bits), st.sampled_from([bits, bits - 1, bits - 8, 24, 16, 64]))

    def mk(a: int, c: int) -> Net:
        c = max(0, min(c, bits))
        return cls((a, c), strict=False)

    return st.builds(mk, _addr(bits, clusters), cidrs)


def _ops(bits: int, clusters: list[int]) -> st.SearchStrategy[list[tuple[str, object, str]]]:
    net = _net(bits, clusters)
    peer = st.sampled_from(PEERS)
    op = st.one_of(
        st.tuples(st.just("insert"), net, peer),
        st.tuples(st.just("insert"), net, peer),
        st.tuples(st.just("insert"), net, peer),
        st.tuples(st.just("remove"), net, peer),
        st.tuples(st.just("remove_peer"), st.none(), peer),
    )
    return st.lists(op, max_size=60)


def _naive(model: dict[Net, str], bits: int, address: int) -> str | None:
    best: tuple[int, str] | None = None
    for n, p in model.items():
        if n.max_prefixlen != bits:
            continue
        if (address >> (bits - n.prefixlen) if n.prefixlen else 0) == (
            int(n.network_address) >> (bits - n.prefixlen) if n.prefixlen else 0
        ) and (best is None or n.prefixlen > best[0]):
            best = (n.prefixlen, p)
    return best[1] if best else None


def _probe_points(model: dict[Net, str], bits: int, extra: list[int]) -> set[int]:
    top = (1 << bits) - 1
    pts = set(extra)
    for n in model:
        lo, hi = int(n.network_address), int(n.broadcast_address)
        pts.update({lo, hi, max(lo - 1, 0), min(hi + 1, top)})
    return pts


def _lookup(trie: AllowedIPs[str], bits: int, address: int) -> str | None:
    return (trie.lookup4 if bits == 32 else trie.lookup6)(address)


def _node_count(trie: AllowedIPs[str]) -> int:
    """Nodes in both tries (white-box: what removal must give back)."""
    stack = [trie._v4.root, trie._v6.root]
    n = 0
    while stack:
        node = stack.pop()
        if node is not None:
            n += 1
            stack.extend((node.child0, node.child1))
    return n


def _check(trie: AllowedIPs[str], model: dict[Net, str], bits: int, extra: list[int]) -> None:
    for a in _probe_points(model, bits, extra):
        assert _lookup(trie, bits, a) == _naive(model, bits, a), (bits, hex(a))
    for p in PEERS:
        owned = {n for n, q in model.items() if q == p}
        entries = list(trie.entries(p))
        assert set(entries) == owned and len(entries) == len(owned), p


def _run(bits: int, ops: list[tuple[str, object, str]], probes: list[int]) -> None:
    trie: AllowedIPs[str] = AllowedIPs()
    model: dict[Net, str] = {}
    for what, net, peer in ops:
        if what == "insert":
            assert isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network)
            trie.insert(net, peer)
            model[net] = peer
        elif what == "remove":
            assert isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network)
            trie.remove(net, peer)
            if model.get(net) == peer:
                del model[net]
        else:
            trie.remove_peer(peer)
            model = {n: q for n, q in model.items() if q != peer}
        _check(trie, model, bits, probes)
    # No garbage left behind: a path-compressed trie never needs more nodes
    # than prefixes plus one branch node per prefix, and none when empty.
    assert _node_count(trie) <= 2 * len(model)
    for p in PEERS:
        trie.remove_peer(p)
    assert _node_count(trie) == 0
    for a in probes:
        assert _lookup(trie, bits, a) is None


@settings(max_examples=150, deadline=None)
@given(_ops(32, V4_CLUSTERS), st.lists(_addr(32, V4_CLUSTERS), max_size=30))
def test_ipv4_trie_matches_naive_router(ops: list[Op], probes: list[int]) -> None:
    _run(32, ops, probes)


@settings(max_examples=150, deadline=None)
@given(_ops(128, V6_CLUSTERS), st.lists(_addr(128, V6_CLUSTERS), max_size=30))
def test_ipv6_trie_matches_naive_router(ops: list[Op], probes: list[int]) -> None:
    _run(128, ops, probes)


def test_families_are_separate() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert(ipaddress.ip_network("0.0.0.0/0"), "v4")
    t.insert(ipaddress.ip_network("::/0"), "v6")
    assert t.lookup4(0x0A000001) == "v4"
    assert t.lookup6(0x0A000001) == "v6"
    t.remove_peer("v4")
    assert t.lookup4(0x0A000001) is None and t.lookup6(1) == "v6"


def test_kernel_selftest_style_cases() -> None:
    # A few hand cases in the spirit of the kernel's selftest/allowedips.c.
    t: AllowedIPs[str] = AllowedIPs()
    ins = [
        ("192.168.4.0/24", "a"), ("192.168.4.4/32", "b"), ("192.168.0.0/16", "c"),
        ("192.95.5.64/27", "c"), ("192.95.5.65/32", "e"), ("0.0.0.0/0", "f"),
        ("2607:5300:60:6b00::/56", "d"), ("2607:5300:60:6b00::c05f:543/128", "a"),
    ]
    for n, p in ins:
        t.insert(ipaddress.ip_network(n), p)

    def look(a: str) -> str | None:
        ip = ipaddress.ip_address(a)
        return _lookup(t, ip.max_prefixlen, int(ip))

    assert look("192.168.4.20") == "a"
    assert look("192.168.4.0") == "a"
    assert look("192.168.4.4") == "b"
    assert look("192.168.200.182") == "c"
    assert look("192.95.5.68") == "c"
    assert look("192.95.5.65") == "e"
    assert look("8.8.8.8") == "f"
    assert look("2607:5300:60:6b00::c05f:543") == "a"
    assert look("2607:5300:60:6b00::1") == "d"
    assert look("2607:5300:60:6c00::1") is None
    # Moving a prefix to another peer.
    t.insert(ipaddress.ip_network("192.168.4.0/24"), "z")
    assert look("192.168.4.20") == "z" and look("192.168.4.4") == "b"
    assert ipaddress.ip_network("192.168.4.0/24") not in set(t.entries("a"))
    # remove() only removes what that peer owns.
    t.remove(ipaddress.ip_network("192.168.4.0/24"), "a")
    assert look("192.168.4.20") == "z"
    t.remove(ipaddress.ip_network("192.168.4.0/24"), "z")
    assert look("192.168.4.20") == "c"
