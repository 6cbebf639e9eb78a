"""The relay's sockets: one UDP socket per allocated port, drained in batches.

``RelayTable`` (sans-IO) decides; this shell binds, reads and sends.  Each
socket is read from the event loop with ``add_reader`` and drained until it
is empty or ``MAX_READS`` reads were made (then other sockets get their
turn): no per-datagram callback.  ``UDP_GRO`` lets one read return many
datagrams of one flow, and they leave in one ``sendmsg`` with ``UDP_SEGMENT``
(``wgpy.io.batch``, the daemon's own batching), so a burst of sealed
WireGuard datagrams costs two system calls per batch, not two per datagram.
The table is asked once per read, not once per datagram.  A handshake
initiation that arrives before the other side's first datagram is held by
the table and sent on from the other side's socket when that side appears.

A send that would block is dropped and counted, as UDP drops: the relay
never queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections import Counter

from wgpy.discovery.relay import WIREGUARD_HEADS, Allocation, RelayTable, Side
from wgpy.io.batch import GroReceiver, GsoSender, enable_gro

log = logging.getLogger("wgpy.registry")

MAX_READS = 64  # reads per readable socket before yielding to the loop
SOCKET_BUFFER = 4 << 20


class RelayServer:
    """Binds the table's ports on its addresses and forwards between them."""

    def __init__(self, table: RelayTable, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.table = table
        self.loop = loop or asyncio.get_event_loop()
        self.sockets: dict[tuple[int, int], socket.socket] = {}
        self.send_errors: Counter[int] = Counter()
        self._sender = GsoSender(self.send_errors)
        self._receiver = GroReceiver()

    def sync(self) -> None:
        """Bind sockets for new sides; a side whose port cannot be bound ends
        its allocation (the peers ask again and get other ports)."""
        for side in self.table.unbound():
            if side.key not in self.table.public or (side.family, side.port) in self.sockets:
                continue
            try:
                sock = self._bind(side)
            except OSError as e:
                log.warning("relay: cannot bind port %d (IPv%d): %s", side.port, side.family,
                            e.strerror or e)
                self.close_allocation(self.table.bind_failed(side))
                continue
            self.sockets[(side.family, side.port)] = sock
            self.table.bound(side)
            self.loop.add_reader(sock.fileno(), self._readable, sock, side)

    def _bind(self, side: Side) -> socket.socket:
        family = socket.AF_INET6 if side.family == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            sock.bind((self.table.addresses[side.family], side.port))
            sock.setblocking(False)
            enable_gro(sock)
        except OSError:
            sock.close()
            raise
        return sock

    def close_allocation(self, alloc: Allocation) -> None:
        for side in alloc.sides.values():
            sock = self.sockets.pop((side.family, side.port), None)
            if sock is None:
                continue
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(sock.fileno())
            sock.close()

    def close(self) -> None:
        for key, sock in list(self.sockets.items()):
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(sock.fileno())
            sock.close()
            del self.sockets[key]

    def _readable(self, sock: socket.socket, side: Side) -> None:
        table = self.table
        now = self.loop.time()
        other = side.other
        out = self.sockets.get((other.family, other.port)) if other is not None else None
        receiver = self._receiver
        for _ in range(MAX_READS):
            receiver.reset()
            try:
                got = receiver.recv(sock)
            except OSError as e:
                # e.g. ECONNREFUSED from an earlier send's ICMP error: not fatal
                if e.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    log.debug("relay recv on port %d: %s", side.port, e)
                continue
            if got is None:
                return
            views, source = got
            sizes = [len(v) for v in views if bytes(v[:4]) in WIREGUARD_HEADS]
            if len(sizes) != len(views):
                table.stats["drop.not_wireguard"] += len(views) - len(sizes)
                views = [v for v in views if bytes(v[:4]) in WIREGUARD_HEADS]
                if not views:
                    continue
            dest = table.forward(side, (source[0], source[1]), len(views), sum(sizes), now)
            if side.held is not None:
                held = table.take_held(side, now)
                if held is not None and side.mapping is not None:
                    self._sender.send(sock, held, [len(held)], side.mapping)
            if dest is None:
                if side.mapping == (source[0], source[1]):
                    table.hold(side, bytes(views[-1]), now)
                continue
            if out is None:
                continue
            data = views[0] if len(views) == 1 else b"".join(views)
            self._sender.send(out, data, sizes, dest)
