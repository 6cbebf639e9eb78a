"""The relay's allocation table and forwarding decisions (sans-IO).

Theory of operation.  When two peers cannot reach each other directly (both
behind NATs that pick a new port per destination, say), each asks the
registry, through its tunnel, for a relay to the other.  The relay is a pair
of UDP ports on the registry host, one per peer: ``X`` sets its endpoint for
``Y`` to ``relay:Px`` and ``Y`` its endpoint for ``X`` to ``relay:Py``.  A
datagram that arrives on ``Px`` is sent on, unchanged, from ``Py`` to the
address ``Y`` last sent from to ``Py``, and the other way round.  There is
no header and no key: the relay carries sealed WireGuard datagrams and the
peers' session is end to end, so any WireGuard implementation works as a
peer (only an endpoint changes) and the relay learns nothing of the traffic.

Why a port per peer and pair, not one shared port.  Behind a NAT that maps
per destination, the mapping a peer has towards ``relay:Px`` exists only
because the peer sends to ``relay:Px``, and only datagrams *from*
``relay:Px`` come back through it.  With one port per side, each side's
mapping is learned from what arrives on its own port and answered from that
port, so both sides may be behind such NATs.  A single shared port would
have to tell the pairs apart by looking into the datagrams (receiver
indices, which change with every handshake, or mac1, which needs the
responder's key) or by adding a header, which standard WireGuard peers do
not speak.

Trust.  A relay is allocated only for a request that WireGuard already
authenticated (the registry checks the tunnel and the source address, as for
LAN candidates) and only between two peers of the registry's device.  A
side's mapping is learned only from datagrams whose source *address* is the
public address the registry's device sees for that peer (any port: a
symmetric NAT picks a new one for the relay), so nobody else can redirect a
relayed session to themselves.  An allocation expires after ``idle`` seconds
without a forwarded datagram; ``max_per_peer`` and ``max_total`` bound what
one peer, and everyone together, can hold.

Until both sides have sent once, the relay cannot forward: the side that
spoke first would have its handshake initiation dropped and WireGuard would
retry only ``REKEY_TIMEOUT`` (5 s) later.  So the relay holds the latest
initiation of a side whose peer is not known yet (one datagram, at most
``HOLD_FOR`` seconds) and delivers it when the peer's first datagram shows
where the peer is; both initiations then cross and the handshake completes
at once.

The shell binds the sockets (``RelayServer``); this module only decides.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from wgpy.control.keys import Key
from wgpy.protocol.events import Endpoint

DEFAULT_PORTS = range(51821, 52077)
DEFAULT_IDLE = 120.0
DEFAULT_MAX_TOTAL = 128
DEFAULT_MAX_PER_PEER = 8
# The first four bytes of every WireGuard message: a type (1-4) and three zero
# bytes.  Anything else cannot be WireGuard; it is dropped, not forwarded.
WIREGUARD_HEADS = frozenset(bytes([t, 0, 0, 0]) for t in (1, 2, 3, 4))
INITIATION_HEAD = bytes([1, 0, 0, 0])
INITIATION_SIZE = 148
HOLD_FOR = 10.0  # seconds a held initiation waits for its peer's first datagram


class Refusal(enum.Enum):
    """Why a relay request was refused (the registry answers REFUSED)."""

    NO_RELAY = "this registry runs no relay"
    SAME_PEER = "a relay to oneself"
    UNKNOWN_PEER = "the other key is not a peer of the registry"
    NOT_CONNECTED = "a peer has no endpoint at the registry"
    NO_FAMILY = "the relay has no address of the peer's address family"
    PEER_LIMIT = "the per-peer relay limit is reached"
    TOTAL_LIMIT = "the relay is full"
    NO_PORT = "no relay port is free"


class RelayRefused(Exception):
    def __init__(self, reason: Refusal, detail: str = "") -> None:
        super().__init__(f"{reason.value}{': ' + detail if detail else ''}")
        self.reason = reason


@dataclass
class Side:
    """One peer's half of an allocation: the port it talks to and what it taught us."""

    key: bytes
    family: int  # 4 or 6
    port: int
    public_ip: str  # the peer's address as the registry sees it (canonical text)
    mapping: Endpoint | None = None  # learned from the last accepted datagram
    other: Side | None = field(default=None, repr=False)
    bound: bool = False  # the shell has a socket on (family, port)
    datagrams: int = 0  # forwarded from this side
    octets: int = 0
    held: bytes | None = field(default=None, repr=False)  # an initiation waiting for this side
    held_at: float = 0.0


@dataclass
class Allocation:
    pair: tuple[bytes, bytes]  # sorted
    sides: dict[bytes, Side]
    created: float
    last_active: float

    @property
    def ready(self) -> bool:
        return all(s.bound for s in self.sides.values())

    def side(self, key: bytes) -> Side:
        return self.sides[key]

    def describe(self) -> str:
        a, b = (self.sides[k] for k in self.pair)
        return (f"{Key(a.key).short_name()} port {a.port} <-> "
                f"{Key(b.key).short_name()} port {b.port}")


def pair_of(a: bytes, b: bytes) -> tuple[bytes, bytes]:
    return (a, b) if a <= b else (b, a)


class RelayTable:
    """Every allocation of one relay.

    :param addresses: the relay's address per family (4 and/or 6), published
        as ``relay.ZONE``.
    :param ports: the UDP ports allocations may use (the firewall must admit them).
    :param idle: seconds without a forwarded datagram before an allocation ends.
    """

    def __init__(
        self,
        addresses: Mapping[int, str],
        ports: range = DEFAULT_PORTS,
        idle: float = DEFAULT_IDLE,
        max_total: int = DEFAULT_MAX_TOTAL,
        max_per_peer: int = DEFAULT_MAX_PER_PEER,
    ) -> None:
        if not addresses:
            raise ValueError("a relay needs at least one address")
        if len(ports) < 2:
            raise ValueError("a relay needs at least two ports")
        self.addresses = dict(addresses)
        self.ports = ports
        self.idle = idle
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self.allocations: dict[tuple[bytes, bytes], Allocation] = {}
        self.by_port: dict[tuple[int, int], Side] = {}
        self.public: dict[bytes, str] = {}  # key -> public address, from the device
        self.stats: Counter[str] = Counter()
        self._cursor = 0
        self._unusable: set[tuple[int, int]] = set()

    # -- the registry's view of the peers ------------------------------------

    def observe(self, public: Mapping[bytes, str], now: float) -> list[Allocation]:
        """Learn every peer's public address (``key -> address`` of peers with an
        endpoint); end allocations of peers that left or went idle.  Returns the
        ended allocations, whose sockets the shell closes."""
        self.public = dict(public)
        for side in self.by_port.values():
            ip = self.public.get(side.key)
            if ip is not None and ip != side.public_ip:
                side.public_ip = ip  # the peer roamed: learn from its new address only
                side.mapping = None
                self.stats["mapping.reset"] += 1
        ended = []
        for alloc in list(self.allocations.values()):
            gone = any(k not in self.public for k in alloc.pair)
            if gone or now - alloc.last_active >= self.idle:
                self.stats["expired" if not gone else "ended.peer_gone"] += 1
                ended.append(self.end(alloc))
        return ended

    # -- requests --------------------------------------------------------------

    def request(self, me: bytes, peer: bytes, now: float) -> Allocation:
        """The allocation between ``me`` and ``peer``, made if needed.

        The caller has authenticated ``me``.  RelayRefused when it cannot be had.
        """
        if me == peer:
            raise RelayRefused(Refusal.SAME_PEER)
        pair = pair_of(me, peer)
        existing = self.allocations.get(pair)
        if existing is not None:
            self.stats["requests.existing"] += 1
            return existing
        for k in pair:
            if k not in self.public:
                raise RelayRefused(Refusal.NOT_CONNECTED, Key(k).short_name())
        if len(self.allocations) >= self.max_total:
            raise RelayRefused(Refusal.TOTAL_LIMIT, f"{self.max_total} allocations")
        for k in pair:
            held = sum(1 for p in self.allocations if k in p)
            if held >= self.max_per_peer:
                raise RelayRefused(Refusal.PEER_LIMIT,
                                   f"{Key(k).short_name()} holds {held}")
        sides: dict[bytes, Side] = {}
        for k in pair:
            ip = self.public[k]
            family = 6 if ":" in ip else 4
            if family not in self.addresses:
                raise RelayRefused(Refusal.NO_FAMILY, f"IPv{family}")
            port = self._free_port(family, [s.port for s in sides.values()])
            if port is None:
                raise RelayRefused(Refusal.NO_PORT)
            sides[k] = Side(k, family, port, ip)
        a, b = (sides[k] for k in pair)
        a.other, b.other = b, a
        alloc = Allocation(pair, sides, now, now)
        self.allocations[pair] = alloc
        for s in sides.values():
            self.by_port[(s.family, s.port)] = s
        self.stats["allocated"] += 1
        return alloc

    def _free_port(self, family: int, taken: Iterable[int]) -> int | None:
        taken = set(taken)
        n = len(self.ports)
        for i in range(n):
            port = self.ports[(self._cursor + i) % n]
            key = (family, port)
            if key in self.by_port or key in self._unusable or port in taken:
                continue
            self._cursor = (self._cursor + i + 1) % n
            return port
        return None

    def unbound(self) -> list[Side]:
        """Sides the shell has not bound a socket for yet."""
        return [s for s in self.by_port.values() if not s.bound]

    def bound(self, side: Side) -> None:
        side.bound = True

    def bind_failed(self, side: Side) -> Allocation:
        """The shell could not bind ``side``'s port: the port is skipped from now on
        and the allocation ends (the peer asks again)."""
        self._unusable.add((side.family, side.port))
        self.stats["bind_failed"] += 1
        alloc = self.allocations[pair_of(side.key, side.other.key if side.other else side.key)]
        return self.end(alloc)

    def end(self, alloc: Allocation) -> Allocation:
        self.allocations.pop(alloc.pair, None)
        for s in alloc.sides.values():
            self.by_port.pop((s.family, s.port), None)
        return alloc

    def endpoint_for(self, me: bytes, peer: bytes) -> tuple[int, int] | None:
        """``(family, port)`` that ``me`` should send to for ``peer``, once bound."""
        alloc = self.allocations.get(pair_of(me, peer))
        if alloc is None or not alloc.ready or me not in alloc.sides:
            return None
        side = alloc.sides[me]
        return side.family, side.port

    # -- the data path -------------------------------------------------------------

    def forward(
        self, side: Side, source: Endpoint, datagrams: int, nbytes: int, now: float
    ) -> Endpoint | None:
        """``datagrams`` (``nbytes`` in all) from ``source`` arrived on ``side``'s
        port: where to send them from the other side's port, or None to drop
        them (counted).  Called once per batch read, not per datagram."""
        if source[0] != side.public_ip:
            self.stats["drop.foreign_source"] += datagrams
            return None
        if side.mapping != source:
            if side.mapping is not None:
                self.stats["mapping.changed"] += 1
            side.mapping = source
        other = side.other
        alloc = self.allocations.get(pair_of(side.key, other.key)) if other else None
        if other is None or alloc is None:
            self.stats["drop.ended"] += datagrams
            return None
        alloc.last_active = now
        if other.mapping is None:
            self.stats["drop.peer_unknown"] += datagrams
            return None
        side.datagrams += datagrams
        side.octets += nbytes
        self.stats["forwarded.datagrams"] += datagrams
        self.stats["forwarded.bytes"] += nbytes
        return other.mapping

    def hold(self, side: Side, datagram: bytes, now: float) -> None:
        """``side`` sent ``datagram`` while its peer is not known yet: keep it for
        the peer if it is a handshake initiation (the latest one only)."""
        other = side.other
        if other is None or other.mapping is not None:
            return
        if len(datagram) == INITIATION_SIZE and datagram[:4] == INITIATION_HEAD:
            other.held, other.held_at = datagram, now
            self.stats["held"] += 1

    def take_held(self, side: Side, now: float) -> bytes | None:
        """The initiation held for ``side``, now that its mapping is known (once)."""
        held, side.held = side.held, None
        if held is None or side.mapping is None:
            return None
        if now - side.held_at > HOLD_FOR:
            self.stats["held.expired"] += 1
            return None
        self.stats["held.delivered"] += 1
        return held

    def counters(self) -> dict[str, int]:
        """Totals for the stats line: the table's counters and what it holds now."""
        out = dict(self.stats)
        out["allocations"] = len(self.allocations)
        return out
