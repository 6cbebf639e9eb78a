"""Two or more sans-IO devices wired together in memory, with a fake clock.

This is the test harness the sans-IO design buys: full handshakes, rekeys,
expiry and keepalives run in milliseconds of real time, deterministically
(a seeded RNG), and every datagram can be inspected, dropped or replayed.
"""

from __future__ import annotations

import ipaddress
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from wgpy.protocol import Device, HandshakeKeys, LogEvent, SendDatagram, WriteTun, messages
from wgpy.protocol.crypto import clamp, public_key
from wgpy.protocol.events import Action, Endpoint, SendBatch
from wgpy.protocol.peer import Peer


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    r = random.Random(seed)
    return lambda n: r.randbytes(n)


def ipv4_packet(src: str, dst: str, payload: bytes = b"x" * 20, proto: int = 17) -> bytes:
    total = 20 + len(payload)
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, total, 0, 0, 64, proto, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )
    return hdr + payload


def ipv6_packet(src: str, dst: str, payload: bytes = b"y" * 20, nh: int = 17) -> bytes:
    hdr = struct.pack(
        "!IHBB16s16s",
        6 << 28, len(payload), nh, 64,
        ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed,
    )
    return hdr + payload


@dataclass
class Node:
    name: str
    device: Device
    endpoint: Endpoint
    private: bytes
    public: bytes
    delivered: list[bytes] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    keys: list[HandshakeKeys] = field(default_factory=list)


def peer_of(node: Node, other: Node) -> Peer:
    """``node``'s peer entry for ``other``."""
    return node.device.peers[other.public]


@dataclass
class Wire:
    """A datagram in flight."""

    src: Endpoint
    dst: Endpoint
    data: bytes
    time: float = 0.0  # the fake clock when it was sent


class MemNet:
    def __init__(self, seed: int = 1) -> None:
        self.now = 1000.0
        self.wall = 1_700_000_000.0
        self.nodes: dict[Endpoint, Node] = {}
        self.in_flight: list[Wire] = []
        self.sent: list[Wire] = []  # every datagram ever sent, for replay tests
        self.filter: Callable[[Wire], bool] = lambda w: True
        self._seed = seed

    def node(self, name: str, endpoint: Endpoint, seed: int | None = None) -> Node:
        # zlib.crc32, not hash(): str hashes change per process (PYTHONHASHSEED).
        if seed is None:
            seed = zlib.crc32(f"{self._seed}:{name}".encode())
        rng = seeded_rng(seed)
        dev = Device(rng)
        dev.verbose = True
        dev.keylog = True
        private = clamp(rng(32))
        dev.set_private_key(private)
        n = Node(name, dev, endpoint, private, public_key(private))
        self.nodes[endpoint] = n
        return n

    def link(self, a: Node, b: Node, a_ips: list[str], b_ips: list[str],
             psk: bytes | None = None, endpoints: bool = True) -> None:
        pa = a.device.add_peer(b.public)
        pb = b.device.add_peer(a.public)
        for cidr in a_ips:  # what b routes to a
            b.device.allowed_ips.insert(ipaddress.ip_network(cidr), pb)
        for cidr in b_ips:
            a.device.allowed_ips.insert(ipaddress.ip_network(cidr), pa)
        if psk:
            pa.preshared_key = psk
            pb.preshared_key = psk
        if endpoints:
            pa.endpoint = b.endpoint
            pb.endpoint = a.endpoint

    def handle(self, node: Node, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, SendDatagram):
                w = Wire(node.endpoint, act.endpoint, act.data, self.now)
                self.sent.append(w)
                self.in_flight.append(w)
            elif isinstance(act, SendBatch):
                off = 0
                for size in act.sizes:
                    w = Wire(node.endpoint, act.endpoint, bytes(act.data[off : off + size]),
                             self.now)
                    off += size
                    self.sent.append(w)
                    self.in_flight.append(w)
            elif isinstance(act, WriteTun):
                node.delivered.extend(bytes(p) for p in act.packets)
            elif isinstance(act, LogEvent):
                node.logs.append(act.message)
            elif isinstance(act, HandshakeKeys):
                node.keys.append(act)

    def send(self, node: Node, packet: bytes) -> None:
        self.handle(node, node.device.encapsulate(packet, self.now, self.wall))

    def send_batch(self, node: Node, packets: list[bytes]) -> None:
        """Like ``send`` for many packets at once, through ``Device.encapsulate_batch``."""
        self.handle(node, node.device.encapsulate_batch(packets, self.now, self.wall))

    def inject_batch(self, src: Endpoint, dst: Endpoint, datagrams: list[bytes]) -> list[Action]:
        """Like ``inject`` for many datagrams from one source (``decapsulate_batch``)."""
        node = self.nodes[dst]
        acts = node.device.decapsulate_batch(datagrams, src, self.now, self.wall)
        self.handle(node, acts)
        return acts

    def inject(self, src: Endpoint, dst: Endpoint, data: bytes) -> list[Action]:
        node = self.nodes[dst]
        acts = node.device.decapsulate(data, src, self.now, self.wall)
        self.handle(node, acts)
        return acts

    def deliver(self, limit: int = 10_000) -> int:
        """Deliver datagrams in flight (and those they cause) until quiet."""
        n = 0
        while self.in_flight and n < limit:
            w = self.in_flight.pop(0)
            n += 1
            if not self.filter(w) or w.dst not in self.nodes:
                continue
            self.inject(w.src, w.dst, w.data)
        return n

    def advance(self, seconds: float, step: float = 0.5) -> None:
        """Move the clock, running every device's timers and the network as it goes."""
        end = self.now + seconds
        while self.now < end:
            nxt = min(
                [d for n in self.nodes.values()
                 if (d := n.device.next_deadline()) is not None] + [end, self.now + step]
            )
            dt = max(nxt - self.now, 0.0)
            self.now += dt
            self.wall += dt
            for node in list(self.nodes.values()):
                self.handle(node, node.device.tick(self.now, self.wall))
            self.deliver()
            if dt == 0:
                self.now += 1e-6
                self.wall += 1e-6


# Addresses used by ``pair()``: outer UDP endpoints and the inner (tunnel) addresses.
A_EP: Endpoint = ("10.0.0.1", 51820)
B_EP: Endpoint = ("10.0.0.2", 51821)
A_IP4, B_IP4 = "10.9.0.1", "10.9.0.2"
A_IP6, B_IP6 = "fd00:9::1", "fd00:9::2"


def pair(seed: int = 1, psk: bytes | None = None, endpoints: bool = True
         ) -> tuple[MemNet, Node, Node]:
    """Two linked devices: a owns 10.9.0.1/32 and fd00:9::1/128, b the ...2 addresses."""
    net = MemNet(seed)
    a = net.node("a", A_EP)
    b = net.node("b", B_EP)
    net.link(a, b, [f"{A_IP4}/32", f"{A_IP6}/128"], [f"{B_IP4}/32", f"{B_IP6}/128"],
             psk=psk, endpoints=endpoints)
    return net, a, b


# The message type of a datagram (0 if invalid), and the types, short for tests.
kind = messages.message_type
INIT, RESP, COOKIE, DATA = (
    messages.MESSAGE_INITIATION,
    messages.MESSAGE_RESPONSE,
    messages.MESSAGE_COOKIE_REPLY,
    messages.MESSAGE_TRANSPORT,
)


def established(seed: int = 7) -> tuple[MemNet, Node, Node]:
    """a and b with a confirmed session both ways (a initiated)."""
    net, a, b = pair(seed)
    net.send(a, ipv4_packet(A_IP4, B_IP4, b"ping"))
    net.deliver()
    net.send(b, ipv4_packet(B_IP4, A_IP4, b"pong"))
    net.deliver()
    assert len(b.delivered) == 1 and len(a.delivered) == 1
    return net, a, b


def p4(src: str, dst: str, n: int = 20) -> bytes:
    """An IPv4 packet of ``n`` payload bytes, each ``n`` (sizes tell packets apart)."""
    return ipv4_packet(src, dst, bytes([n & 0xFF]) * n)


def wires(net: MemNet, src: Node | None = None, msg_type: int | None = None) -> list[Wire]:
    """Datagrams sent so far, optionally only from ``src`` and of one message type."""
    return [
        w for w in net.sent
        if (src is None or w.src == src.endpoint)
        and (msg_type is None or kind(w.data) == msg_type)
    ]
