"""UDP flows: TPROXY datagrams in, a connected socket per flow to the origin.

A flow is keyed by (client address, original destination).  Its first
datagram arrives on the shared transparent listener with the destination in
a control message; the flow then opens

* ``reply``: transparent, bound to the original destination, connected to
  the client: replies leave from the address the client sent to, and the
  TPROXY lookup delivers the client's later datagrams straight to it;
* ``up``: connected to the chosen origin.

All sockets are read with ``loop.add_reader`` and drained in bounded
batches (``DatagramProtocol``'s per-datagram callbacks cost far more than a
drained batch: see docs/performance.md).  A send that
would block drops the datagram and counts it: UDP queues never grow.
Flows end after ``UdpIdleTimeout`` without traffic.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass

from wgpy.control.endpoint import Endpoint

from . import proxyproto
from .config import Rule
from .stats import RuleStats
from .tproxy import ANCILLARY_SIZE, family_of, parse_origdst, udp_reply_socket

BATCH = 64
MAX_DATAGRAM = 65535


@dataclass
class Admitted:
    rule: Rule
    candidates: list[Endpoint]
    stats: RuleStats


# admit(protocol, src, dst) -> Admitted or None (refused and counted)
AdmitFn = Callable[[str, Endpoint, Endpoint], Admitted | None]
ReleaseFn = Callable[[str, str], None]


class UdpFlow:
    def __init__(self, relay: UdpRelay, key: tuple[Endpoint, Endpoint], adm: Admitted,
                 reply: socket.socket, up: socket.socket, now: float) -> None:  # fmt: skip
        self.relay = relay
        self.key = key
        self.rule = adm.rule
        self.stats = adm.stats
        self.reply = reply
        self.up = up
        self.last_activity = now
        self.header = b""
        if adm.rule.proxy_protocol == 2:
            self.header = proxyproto.encode_v2(key[0], key[1], "udp")
        self.closed = False

    def to_origin(self, data: bytes, now: float) -> None:
        self.last_activity = now
        self.stats.udp_datagrams_up += 1
        self.stats.bytes_up += len(data)
        try:
            self.up.send(self.header + data if self.header else data)
        except (BlockingIOError, ConnectionRefusedError, OSError):
            self.stats.udp_dropped += 1

    def on_up_readable(self) -> None:
        """Datagrams from the origin: relayed to the client, from the address it sent to."""
        now = self.relay.clock()
        for _ in range(BATCH):
            try:
                data = self.up.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:  # e.g. ICMP port unreachable from the origin
                self.stats.udp_dropped += 1
                return
            self.last_activity = now
            self.stats.udp_datagrams_down += 1
            self.stats.bytes_down += len(data)
            try:
                self.reply.send(data)
            except OSError:
                self.stats.udp_dropped += 1

    def on_reply_readable(self) -> None:
        """Datagrams from the client on this flow's socket: relayed to the origin."""
        now = self.relay.clock()
        for _ in range(BATCH):
            try:
                data = self.reply.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                return
            self.to_origin(data, now)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        loop = self.relay.loop
        for s in (self.reply, self.up):
            loop.remove_reader(s.fileno())
            s.close()


class UdpRelay:
    """All UDP listeners and flows of one proxy process."""

    def __init__(self, loop: asyncio.AbstractEventLoop, admit: AdmitFn, release: ReleaseFn,
                 unmatched: RuleStats) -> None:  # fmt: skip
        self.loop = loop
        self.clock = loop.time
        self.admit = admit
        self.release = release
        self.unmatched = unmatched
        self.flows: dict[tuple[Endpoint, Endpoint], UdpFlow] = {}
        self.listeners: list[socket.socket] = []

    def add_listener(self, sock: socket.socket) -> None:
        self.listeners.append(sock)
        self.loop.add_reader(sock.fileno(), self._listener_ready, sock)

    def _listener_ready(self, sock: socket.socket) -> None:
        now = self.clock()
        for _ in range(BATCH):
            try:
                data, anc, _flags, addr = sock.recvmsg(MAX_DATAGRAM, ANCILLARY_SIZE)
            except BlockingIOError:
                return
            except OSError:
                return
            dst = parse_origdst(anc)
            if dst is None:
                self.unmatched.udp_dropped += 1
                continue
            key = ((addr[0], addr[1]), dst)
            flow = self.flows.get(key) or self._open(key, now)
            if flow is not None:
                flow.to_origin(data, now)

    def _open(self, key: tuple[Endpoint, Endpoint], now: float) -> UdpFlow | None:
        client, dst = key
        adm = self.admit("udp", client, dst)
        if adm is None:
            return None
        if not adm.candidates:
            adm.stats.refuse("no-origin")
            self.release(adm.rule.name, client[0])
            return None
        origin = adm.candidates[0]
        reply = up = None
        try:
            reply = udp_reply_socket(dst, client)
            up = socket.socket(family_of(origin[0]), socket.SOCK_DGRAM)
            up.setblocking(False)
            up.connect(origin)
        except OSError:
            for s in (reply, up):
                if s is not None:
                    s.close()
            adm.stats.refuse("udp-socket")
            self.release(adm.rule.name, client[0])
            return None
        flow = UdpFlow(self, key, adm, reply, up, now)
        self.flows[key] = flow
        adm.stats.udp_flows += 1
        adm.stats.udp_active += 1
        self.loop.add_reader(up.fileno(), flow.on_up_readable)
        self.loop.add_reader(reply.fileno(), flow.on_reply_readable)
        return flow

    def end(self, flow: UdpFlow) -> None:
        if self.flows.pop(flow.key, None) is None:
            return
        flow.close()
        flow.stats.udp_active -= 1
        self.release(flow.rule.name, flow.key[0][0])

    def sweep(self, now: float, idle_timeout: float) -> None:
        for flow in [f for f in self.flows.values() if now - f.last_activity > idle_timeout]:
            self.end(flow)

    def close(self) -> None:
        for flow in list(self.flows.values()):
            self.end(flow)
        for s in self.listeners:
            self.loop.remove_reader(s.fileno())
            s.close()
        self.listeners.clear()
