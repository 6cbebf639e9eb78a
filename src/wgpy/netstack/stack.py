"""The stack: one host's addresses, its connections, ports and timers.

Theory of operation (sans-IO, like ``wgpy.protocol``): the shell feeds
``receive(packets, now)`` with the IP packets that arrive for the host and
calls ``tick(now)`` at ``next_deadline()``; the application opens and uses
connections and endpoints through the stack's objects.  Everything the
stack wants sent accumulates as whole IP packets in ``take_output()``;
everything the application should hear of accumulates as ``Ready`` flags on
objects, handed out by ``take_events()``.  Time comes in as ``now``,
randomness from the ``rng`` given at construction (initial sequence
numbers, ephemeral ports, echo identifiers).

``receive`` demultiplexes each packet by protocol and addresses: TCP by
the connection's four-tuple, then to a listener for a SYN, else a RST
(RFC 9293 3.10.7.1); UDP to a bound endpoint, else an ICMP port
unreachable; ICMP echo requests to us are answered, replies go to their
identifier, errors to the connection or endpoint whose packet they quote.
After a batch, every connection that received segments sends what it owes
(``TcpConnection.flush``): one ACK per connection per batch.

The stack does not route: every packet it sends goes into the one output
(the tunnel).  MSS is the tunnel MTU less the IP and TCP headers.
"""

from __future__ import annotations

import errno
import heapq
import ipaddress
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence

from wgpy.netstack import icmp, segment, udp
from wgpy.netstack.events import Ready
from wgpy.netstack.ip import (
    IPV4_HEADER_LEN,
    IPV6_HEADER_LEN,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    Buffer,
    Malformed,
    Packet,
    Path,
    parse,
    verify_transport,
)
from wgpy.netstack.segment import ACK, FIN, RST, SYN, TCP_HEADER_LEN
from wgpy.netstack.tcp import State, TcpConfig, TcpConnection
from wgpy.netstack.udp import UdpEndpoint
from wgpy.protocol.ippacket import checksum

EPHEMERAL_PORTS = range(32768, 61000)  # Linux's ip_local_port_range
DEFAULT_BACKLOG = 128
# ICMP errors we send (port unreachable): at most this many a second, as hosts
# limit them (RFC 1812 4.3.2.8, RFC 4443 2.4(f)).
ICMP_ERROR_RATE = 100.0
ICMP_ERROR_BURST = 50.0

Key = tuple[bytes, int, bytes, int]  # local address, local port, remote address, remote port


class TcpListener:
    """A listening port (passive open): established connections wait here
    until the application accepts them."""

    def __init__(self, stack: Stack, local: bytes | None, port: int, backlog: int) -> None:
        self._stack = stack
        self.local = local  # None: every address of the stack
        self.port = port
        self.backlog = max(1, backlog)
        self.queue: deque[TcpConnection] = deque()
        self.embryonic = 0  # connections in SYN-RECEIVED for it
        self.events = Ready.NONE
        self.closed = False
        self.user: object = None

    def has_room(self) -> bool:
        return len(self.queue) + self.embryonic < self.backlog

    def ready(self, conn: TcpConnection) -> None:
        """Call after ``conn``, opened by a SYN to this listener, is established."""
        self.embryonic = max(0, self.embryonic - 1)
        conn.listener = None
        self.queue.append(conn)
        self.events |= Ready.ACCEPT
        self._stack.touch(self)

    def accept(self) -> TcpConnection | None:
        return self.queue.popleft() if self.queue else None


class EchoEndpoint:
    """An ICMP echo identifier: the replies to its requests, in order."""

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.replies: deque[tuple[bytes, int, bytes]] = deque(maxlen=1024)  # source, seq, data
        self.events = Ready.NONE
        self.closed = False
        self.user: object = None


Waitable = TcpConnection | TcpListener | UdpEndpoint | EchoEndpoint


class Stack:
    """A host's TCP/UDP/ICMP over IPv4 and IPv6, without I/O."""

    def __init__(self, addresses: Sequence[str], mtu: int, rng: Callable[[int], bytes],
                 tcp: TcpConfig | None = None, verify_checksums: bool = True) -> None:
        """:param addresses: the host's addresses (``10.0.0.2`` or ``10.0.0.2/24``).
        :param mtu: the largest IP packet the link takes.
        :param verify_checksums: check IPv4 header and transport checksums of
            what arrives (a WireGuard tunnel authenticates every packet; the
            kernel's WireGuard skips them too)."""
        packed = [ipaddress.ip_interface(a).ip.packed for a in addresses]
        self.addresses = packed
        self.v4 = next((a for a in packed if len(a) == 4), None)
        self.v6 = next((a for a in packed if len(a) == 16), None)
        self._local = set(packed)
        if mtu < 1280 and self.v6 is not None or mtu < 576:
            raise ValueError(f"MTU {mtu} is too small for IPv4 (576) / IPv6 (1280)")
        self.mtu = mtu
        self.rng = rng
        self.tcp_config = tcp or TcpConfig()
        self.verify = verify_checksums
        self.conns: dict[Key, TcpConnection] = {}
        self.listeners: dict[tuple[bytes | None, int], TcpListener] = {}
        self.udp: dict[tuple[bytes | None, int], UdpEndpoint] = {}
        self.echo: dict[int, EchoEndpoint] = {}
        self.stats: Counter[str] = Counter()
        self._out: list[bytearray] = []
        self._touched: dict[int, Waitable] = {}
        self._batch: dict[int, TcpConnection] = {}
        self._heap: list[tuple[float, int, TcpConnection]] = []
        self._seq = 0
        self._icmp_tokens = ICMP_ERROR_BURST
        self._icmp_last = float("-inf")

    # -- the shell's side ------------------------------------------------------------
    def receive(self, packets: Iterable[Buffer], now: float) -> None:
        """IP packets for this host, in order of arrival."""
        for pkt in packets:
            try:
                p = parse(pkt, self.verify)
                if p.dst not in self._local:
                    self.stats["drop.not_ours"] += 1
                    continue
                proto = p.proto
                if proto == PROTO_TCP:
                    self._tcp_input(p, pkt, now)
                elif proto == PROTO_UDP:
                    self._udp_input(p, pkt, now)
                elif proto == PROTO_ICMP or proto == PROTO_ICMPV6:
                    self._icmp_input(p, now)
                else:
                    self.stats["drop.protocol"] += 1
            except Malformed as e:
                self.stats[f"drop.{e}"] += 1
        batch = self._batch
        if batch:
            for conn in batch.values():
                if conn.state is not State.CLOSED:
                    conn.flush(now)
            batch.clear()

    def tick(self, now: float) -> None:
        """Run the timers that are due (the earliest is ``next_deadline()``)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, conn = heapq.heappop(heap)
            if conn.scheduled == when:
                conn.scheduled = None
            if conn.deadline is not None and conn.deadline <= now:
                conn.on_timer(now)
            if conn.state is not State.CLOSED:
                self._schedule(conn)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].deadline != heap[0][0]:
            heapq.heappop(heap)  # superseded
        return heap[0][0] if heap else None

    def take_output(self) -> list[bytearray]:
        """The IP packets to send, in order; the list is the caller's."""
        out = self._out.copy()  # connections hold the list itself: empty it in place
        self._out.clear()
        return out

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    def take_events(self) -> list[tuple[Waitable, Ready]]:
        """Each object that has news, once, with its flags (which are cleared)."""
        if not self._touched:
            return []
        out: list[tuple[Waitable, Ready]] = []
        for obj in self._touched.values():
            if obj.events:
                out.append((obj, obj.events))
                obj.events = Ready.NONE
        self._touched.clear()
        return out

    def touch(self, obj: Waitable) -> None:
        """Note that ``obj`` has events (its owner calls this)."""
        self._touched[id(obj)] = obj

    # -- TCP ------------------------------------------------------------------------------
    def mss_for(self, remote: bytes) -> int:
        ip_len = IPV6_HEADER_LEN if len(remote) == 16 else IPV4_HEADER_LEN
        return self.mtu - ip_len - TCP_HEADER_LEN

    def local_for(self, remote: bytes) -> bytes:
        """Our address of ``remote``'s family.  :raises OSError: we have none."""
        local = self.v6 if len(remote) == 16 else self.v4
        if local is None:
            family = "IPv6" if len(remote) == 16 else "IPv4"
            raise OSError(errno.ENETUNREACH, f"the tunnel has no {family} address")
        return local

    def connect(self, remote: bytes, port: int, now: float, local_port: int = 0
                ) -> TcpConnection:
        """Open a connection to ``remote`` (packed) ``port``: the SYN goes out now."""
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        local = self.local_for(remote)
        lport = local_port or self._ephemeral_port(local, remote, port)
        key = (local, lport, remote, port)
        if key in self.conns:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        conn = self._new_conn(Path(local, remote, PROTO_TCP), lport, port)
        self.conns[key] = conn
        conn.open_active(now)
        return conn

    def listen(self, port: int, local: bytes | None = None, backlog: int = DEFAULT_BACKLOG
               ) -> TcpListener:
        """Listen on ``port`` of ``local`` (None: all our addresses)."""
        if local is not None and local not in self._local:
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        port = port or self._free_listen_port(local)
        if (local, port) in self.listeners or (None, port) in self.listeners or (
                local is None and any(p == port for _, p in self.listeners)):
            raise OSError(errno.EADDRINUSE, "Address already in use")
        listener = TcpListener(self, local, port, backlog)
        self.listeners[(local, port)] = listener
        return listener

    def close_listener(self, listener: TcpListener, now: float) -> None:
        """Stop listening; connections not accepted yet are reset."""
        listener.closed = True
        self.listeners.pop((listener.local, listener.port), None)
        while listener.queue:
            listener.queue.popleft().abort(now)
        for conn in list(self.conns.values()):
            if conn.listener is listener:
                conn.abort(now)

    def _new_conn(self, path: Path, lport: int, rport: int) -> TcpConnection:
        iss = int.from_bytes(self.rng(4), "big")
        return TcpConnection(path, lport, rport, iss, self.mss_for(path.dst), self.tcp_config,
                             self._out, self._on_conn)

    def _on_conn(self, conn: TcpConnection) -> None:
        """A connection has events, a new deadline, or has closed."""
        self._touched[id(conn)] = conn
        if conn.state is State.CLOSED:
            key = (conn.path.src, conn.lport, conn.path.dst, conn.rport)
            if self.conns.get(key) is conn:
                del self.conns[key]
            if conn.listener is not None:
                conn.listener.embryonic = max(0, conn.listener.embryonic - 1)
                conn.listener = None
            return
        self._schedule(conn)

    def _schedule(self, conn: TcpConnection) -> None:
        d = conn.deadline
        if d is not None and d != conn.scheduled:
            conn.scheduled = d
            self._seq += 1
            heapq.heappush(self._heap, (d, self._seq, conn))
            if len(self._heap) > 4 * len(self.conns) + 256:
                # Superseded entries pile up while deadlines move: sweep them.
                self._heap = [e for e in self._heap if e[2].deadline == e[0]]
                heapq.heapify(self._heap)

    def _ephemeral_port(self, local: bytes, remote: bytes, rport: int) -> int:
        span = len(EPHEMERAL_PORTS)
        start = int.from_bytes(self.rng(2), "big") % span
        for i in range(span):
            port = EPHEMERAL_PORTS[(start + i) % span]
            if (local, port, remote, rport) not in self.conns and (
                    (local, port) not in self.listeners and (None, port) not in self.listeners):
                return port
        raise OSError(errno.EADDRNOTAVAIL, "no free local port")

    def _free_listen_port(self, local: bytes | None) -> int:
        span = len(EPHEMERAL_PORTS)
        start = int.from_bytes(self.rng(2), "big") % span
        used = {p for _, p in self.listeners} | {k[1] for k in self.conns}
        for i in range(span):
            port = EPHEMERAL_PORTS[(start + i) % span]
            if port not in used:
                return port
        raise OSError(errno.EADDRINUSE, "no free port to listen on")

    def _tcp_input(self, p: Packet, raw: Buffer, now: float) -> None:
        data = p.payload
        if self.verify and not verify_transport(p.src, p.dst, PROTO_TCP, data):
            self.stats["drop.tcp_checksum"] += 1
            return
        seg = segment.parse(data)
        conn = self.conns.get((p.dst, seg.dport, p.src, seg.sport))
        if conn is not None:
            conn.on_segment(seg, now)
            self._batch[id(conn)] = conn
            return
        flags = seg.flags
        if flags & RST:
            return
        if flags & SYN and not flags & ACK:
            listener = self.listeners.get((p.dst, seg.dport)) or self.listeners.get(
                (None, seg.dport))
            if listener is not None:
                if not listener.has_room():
                    self.stats["drop.listen_overflow"] += 1
                    return  # as Linux: the peer's SYN retransmission tries again
                conn = self._new_conn(Path(p.dst, p.src, PROTO_TCP), seg.dport, seg.sport)
                conn.listener = listener
                listener.embryonic += 1
                self.conns[(p.dst, seg.dport, p.src, seg.sport)] = conn
                conn.open_passive(seg, now)
                return
        # Nobody here (RFC 9293 3.10.7.1): a RST that the sender will accept.
        self.stats["tcp.reset_sent"] += 1
        path = Path(p.dst, p.src, PROTO_TCP)
        if flags & ACK:
            self._out.append(segment.build(path, seg.dport, seg.sport, seg.ack, 0, RST, 0))
        else:
            seg_len = len(seg.payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
            self._out.append(segment.build(path, seg.dport, seg.sport, 0,
                                           (seg.seq + seg_len) & 0xFFFFFFFF, RST | ACK, 0))

    # -- UDP ------------------------------------------------------------------------------
    def udp_bind(self, port: int = 0, local: bytes | None = None) -> UdpEndpoint:
        """Bind a UDP ``port`` (0: an ephemeral one) on ``local`` (None: all)."""
        if local is not None and local not in self._local:
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        if port == 0:
            span = len(EPHEMERAL_PORTS)
            start = int.from_bytes(self.rng(2), "big") % span
            used = {p for _, p in self.udp}
            for i in range(span):
                candidate = EPHEMERAL_PORTS[(start + i) % span]
                if candidate not in used:
                    port = candidate
                    break
            else:
                raise OSError(errno.EADDRINUSE, "no free UDP port")
        if (local, port) in self.udp or (None, port) in self.udp or (
                local is None and any(p == port for _, p in self.udp)):
            raise OSError(errno.EADDRINUSE, "Address already in use")
        ep = UdpEndpoint(local, port)
        self.udp[(local, port)] = ep
        return ep

    def udp_close(self, ep: UdpEndpoint) -> None:
        ep.closed = True
        if self.udp.get((ep.local, ep.port)) is ep:
            del self.udp[(ep.local, ep.port)]

    def udp_send(self, ep: UdpEndpoint, remote: bytes, port: int, data: Buffer) -> None:
        """Send one datagram from ``ep``.  :raises OSError: EMSGSIZE when it does
        not fit the MTU (no fragmentation), ENETUNREACH without an address."""
        local = ep.local if ep.local is not None else self.local_for(remote)
        if len(local) != len(remote):
            raise OSError(errno.EAFNOSUPPORT, "address family mismatch")
        ip_len = IPV6_HEADER_LEN if len(remote) == 16 else IPV4_HEADER_LEN
        if ip_len + udp.UDP_HEADER_LEN + len(data) > self.mtu:
            raise OSError(errno.EMSGSIZE, "Message too long")
        if not 0 < port < 65536:
            raise OSError(errno.EINVAL, f"port {port} out of range")
        self._out.append(udp.build(Path(local, remote, PROTO_UDP), ep.port, port, data))

    def _udp_input(self, p: Packet, raw: Buffer, now: float) -> None:
        sport, dport, payload, csum = udp.parse(p.payload)
        if self.verify and (csum or len(p.src) == 16) and not verify_transport(
                p.src, p.dst, PROTO_UDP, p.payload[: udp.UDP_HEADER_LEN + len(payload)]):
            self.stats["drop.udp_checksum"] += 1
            return
        ep = self.udp.get((p.dst, dport)) or self.udp.get((None, dport))
        if ep is None:
            self.stats["udp.no_port"] += 1
            if self._icmp_allowed(now):
                path = Path(p.dst, p.src, icmp.proto_for(len(p.src) == 16))
                self._out.append(icmp.build_port_unreachable(path, raw))
            return
        if ep.deliver(bytes(payload), p.src, sport):
            self.touch(ep)
        else:
            self.stats["drop.udp_queue_full"] += 1

    # -- ICMP -----------------------------------------------------------------------------
    def echo_open(self) -> EchoEndpoint:
        """A new echo identifier (for ``ping``)."""
        for _ in range(64):
            ident = int.from_bytes(self.rng(2), "big")
            if ident not in self.echo:
                ep = EchoEndpoint(ident)
                self.echo[ident] = ep
                return ep
        raise OSError(errno.EADDRINUSE, "no free echo identifier")

    def echo_close(self, ep: EchoEndpoint) -> None:
        ep.closed = True
        if self.echo.get(ep.ident) is ep:
            del self.echo[ep.ident]

    def echo_send(self, ep: EchoEndpoint, remote: bytes, seq: int, payload: Buffer) -> None:
        local = self.local_for(remote)
        ip_len = IPV6_HEADER_LEN if len(remote) == 16 else IPV4_HEADER_LEN
        if ip_len + 8 + len(payload) > self.mtu:
            raise OSError(errno.EMSGSIZE, "Message too long")
        path = Path(local, remote, icmp.proto_for(len(remote) == 16))
        self._out.append(icmp.build_echo(path, True, ep.ident, seq & 0xFFFF, payload))

    def _icmp_input(self, p: Packet, now: float) -> None:
        v6 = len(p.src) == 16
        if (p.proto == PROTO_ICMPV6) != v6:
            self.stats["drop.icmp_family"] += 1
            return
        if self.verify:
            ok = (verify_transport(p.src, p.dst, PROTO_ICMPV6, p.payload) if v6
                  else checksum(p.payload) == 0)
            if not ok:
                self.stats["drop.icmp_checksum"] += 1
                return
        msg = icmp.parse_message(v6, p.payload)
        if isinstance(msg, icmp.Echo):
            if msg.request:
                path = Path(p.dst, p.src, p.proto)
                self._out.append(icmp.build_echo(path, False, msg.ident, msg.seq, msg.payload))
                self.stats["icmp.echo_answered"] += 1
            else:
                ep = self.echo.get(msg.ident)
                if ep is not None:
                    ep.replies.append((p.src, msg.seq, msg.payload))
                    ep.events |= Ready.DATAGRAM
                    self.touch(ep)
        elif isinstance(msg, icmp.QuotedError):
            self._icmp_error(msg, now)

    def _icmp_error(self, err: icmp.QuotedError, now: float) -> None:
        if err.src not in self._local:
            return  # it quotes a packet we did not send
        if err.proto == PROTO_TCP:
            conn = self.conns.get((err.src, err.sport, err.dst, err.dport))
            if conn is not None:
                conn.on_icmp_unreachable(err.error, now)
        elif err.proto == PROTO_UDP:
            ep = self.udp.get((err.src, err.sport)) or self.udp.get((None, err.sport))
            if ep is not None:
                ep.error = err.error
                ep.events |= Ready.DATAGRAM
                self.touch(ep)

    def _icmp_allowed(self, now: float) -> bool:
        earned = (now - self._icmp_last) * ICMP_ERROR_RATE
        tokens = min(ICMP_ERROR_BURST, self._icmp_tokens + earned)
        self._icmp_last = now
        if tokens < 1:
            self._icmp_tokens = tokens
            return False
        self._icmp_tokens = tokens - 1
        return True
