"""Cryptokey routing: a path-compressed binary trie per address family.

Theory of operation: as the kernel's allowedips.c, each node holds a prefix
(``key`` masked to ``cidr`` bits) and optionally the peer that owns it;
children are indexed by the first bit after the node's prefix.  Nodes with
no peer exist only where two branches split.  Lookup walks from the root
while the node's prefix matches, remembering the last peer seen: the longest
match.  A prefix belongs to at most one peer; inserting it for another peer
moves it.  Per-peer insertion order is kept for ``entries``, which the UAPI
reports.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Node(Generic[T]):
    __slots__ = ("key", "cidr", "peer", "child0", "child1")

    def __init__(self, key: int, cidr: int, peer: T | None) -> None:
        self.key = key
        self.cidr = cidr
        self.peer = peer
        self.child0: _Node[T] | None = None
        self.child1: _Node[T] | None = None


def _mask(bits: int, cidr: int) -> int:
    return ((1 << cidr) - 1) << (bits - cidr) if cidr else 0


def _common_prefix(bits: int, a: int, b: int, limit: int) -> int:
    diff = a ^ b
    n = bits - diff.bit_length() if diff else bits
    return min(n, limit)


class _Trie(Generic[T]):
    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.root: _Node[T] | None = None

    def _bit(self, key: int, i: int) -> int:
        return (key >> (self.bits - 1 - i)) & 1

    def _matches(self, node: _Node[T], key: int) -> bool:
        return ((node.key ^ key) >> (self.bits - node.cidr)) == 0 if node.cidr else True

    def insert(self, key: int, cidr: int, peer: T) -> T | None:
        """Insert; returns the peer that owned exactly this prefix before, if any."""
        key &= _mask(self.bits, cidr)
        new = _Node(key, cidr, peer)
        parent: _Node[T] | None = None
        node = self.root
        while node is not None and node.cidr <= cidr and self._matches(node, key):
            if node.cidr == cidr:
                old = node.peer
                node.peer = peer
                return old
            parent = node
            node = node.child1 if self._bit(key, node.cidr) else node.child0
        if node is not None:
            common = _common_prefix(self.bits, node.key, key, min(node.cidr, cidr))
            if common == cidr:
                # The new prefix contains the existing subtree.
                self._set_child(new, self._bit(node.key, cidr), node)
            else:
                split = _Node[T](key & _mask(self.bits, common), common, None)
                self._set_child(split, self._bit(node.key, common), node)
                self._set_child(split, self._bit(key, common), new)
                new = split
        if parent is None:
            self.root = new
        else:
            self._set_child(parent, self._bit(key, parent.cidr), new)
        return None

    @staticmethod
    def _set_child(node: _Node[T], bit: int, child: _Node[T]) -> None:
        if bit:
            node.child1 = child
        else:
            node.child0 = child

    def lookup(self, key: int) -> T | None:
        found: T | None = None
        node = self.root
        bits = self.bits
        while node is not None:
            c = node.cidr
            if c and (node.key ^ key) >> (bits - c):
                break
            if node.peer is not None:
                found = node.peer
            if c == bits:
                break
            node = node.child1 if (key >> (bits - 1 - c)) & 1 else node.child0
        return found

    def exact(self, key: int, cidr: int) -> T | None:
        node = self.root
        while node is not None and node.cidr <= cidr and self._matches(node, key):
            if node.cidr == cidr:
                return node.peer
            node = node.child1 if self._bit(key, node.cidr) else node.child0
        return None

    def remove(self, key: int, cidr: int) -> None:
        self.root = self._remove(self.root, key & _mask(self.bits, cidr), cidr)

    def _remove(self, node: _Node[T] | None, key: int, cidr: int) -> _Node[T] | None:
        if node is None or node.cidr > cidr or not self._matches(node, key):
            return node
        if node.cidr == cidr:
            node.peer = None
        elif self._bit(key, node.cidr):
            node.child1 = self._remove(node.child1, key, cidr)
        else:
            node.child0 = self._remove(node.child0, key, cidr)
        return self._compact(node)

    @staticmethod
    def _compact(node: _Node[T]) -> _Node[T] | None:
        if node.peer is not None:
            return node
        if node.child0 is None:
            return node.child1
        if node.child1 is None:
            return node.child0
        return node



class AllowedIPs(Generic[T]):
    """Longest-prefix-match routing from inner addresses to peers."""

    def __init__(self) -> None:
        self._v4: _Trie[T] = _Trie(32)
        self._v6: _Trie[T] = _Trie(128)
        # The tries are never replaced: the data path calls these directly.
        self.lookup4 = self._v4.lookup
        self.lookup6 = self._v6.lookup
        # peer -> ordered prefixes it owns: (bits, masked key, cidr) -> None
        self._by_peer: dict[T, dict[tuple[int, int, int], None]] = {}

    def _trie(self, bits: int) -> _Trie[T]:
        return self._v4 if bits == 32 else self._v6

    def insert(self, network: Network, peer: T) -> None:
        bits = network.max_prefixlen
        key = int(network.network_address)
        cidr = network.prefixlen
        old = self._trie(bits).insert(key, cidr, peer)
        entry = (bits, key, cidr)
        if old is not None and old is not peer:
            self._by_peer.get(old, {}).pop(entry, None)
        self._by_peer.setdefault(peer, {})[entry] = None

    def remove(self, network: Network, peer: T) -> None:
        """Remove ``network`` if ``peer`` owns it."""
        bits = network.max_prefixlen
        key, cidr = int(network.network_address), network.prefixlen
        trie = self._trie(bits)
        if trie.exact(key, cidr) is peer:
            trie.remove(key, cidr)
            self._by_peer.get(peer, {}).pop((bits, key, cidr), None)

    def remove_peer(self, peer: T) -> None:
        for bits, key, cidr in self._by_peer.pop(peer, {}):
            trie = self._trie(bits)
            if trie.exact(key, cidr) is peer:
                trie.remove(key, cidr)

    def entries(self, peer: T) -> Iterator[Network]:
        for bits, key, cidr in self._by_peer.get(peer, {}):
            if bits == 32:
                yield ipaddress.IPv4Network((key, cidr))
            else:
                yield ipaddress.IPv6Network((key, cidr))
