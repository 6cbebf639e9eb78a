"""Batched UDP I/O: GSO on send (``UDP_SEGMENT``), GRO on receive (``UDP_GRO``).

Theory of operation.  One ``sendmsg`` with a ``UDP_SEGMENT`` cmsg sends a
buffer of equal-sized datagrams (the last may be shorter) as one
super-packet that the kernel splits as late as it can; ``GsoSender.send`` cuts a
batch into such runs (at most ``GSO_MAX_SEGMENTS`` datagrams, 64 KB) and
sends single datagrams with a plain ``sendto``.  With ``UDP_GRO`` set, one
``recvmsg_into`` may return many datagrams of one flow glued together, the
segment size in a cmsg; ``GroReceiver`` hands them back as views.

Python has no ``recvmmsg``/``sendmmsg``: where GSO/GRO do not apply (a
peer that sends one datagram per syscall) the drain loop makes one call per
datagram.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections import Counter
from collections.abc import Sequence
from typing import Final

from wgpy.protocol.events import Endpoint

SOL_UDP: Final = 17
UDP_SEGMENT: Final = 103
UDP_GRO: Final = 104
GSO_MAX_SEGMENTS: Final = 64
GSO_MAX_BYTES: Final = 65000
_CMSG_SPACE: Final = socket.CMSG_SPACE(4)
_U16: Final = struct.Struct("=H")
_I32: Final = struct.Struct("=i")


def enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


class GsoSender:
    """Sends runs of datagrams with UDP GSO, falling back to one send each.
    Failed sends are dropped (as UDP drops) and counted in ``errors`` by errno."""

    def __init__(self, errors: Counter[int]) -> None:
        self.gso = True
        self.errors = errors

    def send(
        self, sock: socket.socket, data: bytes | bytearray | memoryview, sizes: Sequence[int],
        endpoint: Endpoint,
    ) -> None:
        """Send the datagrams laid end to end in ``data`` (their lengths in ``sizes``)."""
        mv = memoryview(data)
        off = 0
        i = 0
        n = len(sizes)
        while i < n:
            size = sizes[i]
            j = i + 1
            total = size
            if self.gso:
                while (
                    j < n
                    and j - i < GSO_MAX_SEGMENTS
                    and sizes[j] <= size
                    and total + sizes[j] <= GSO_MAX_BYTES
                ):
                    total += sizes[j]
                    j += 1
                    if sizes[j - 1] < size:
                        break  # only the last of a run may be shorter
            chunk = mv[off : off + total]
            try:
                if j - i > 1:
                    sock.sendmsg([chunk], [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))], 0, endpoint)
                else:
                    sock.sendto(chunk, endpoint)
            except OSError as e:
                if j - i > 1 and e.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
                    self.gso = False  # no GSO on this route: resend one by one
                    continue
                # EAGAIN: the socket buffer is full; others: no route, ...
                self.errors[e.errno or 0] += j - i
            off += total
            i = j


class GroReceiver:
    """Drains a socket into an arena of buffers; each call returns one read's datagrams."""

    def __init__(self, arena: int = 1 << 21, read_size: int = 65536) -> None:
        self._arena = bytearray(arena)
        self._mv = memoryview(self._arena)
        self._read = read_size
        self._off = 0

    def reset(self) -> None:
        """Reuse the arena: views returned before this call become invalid."""
        self._off = 0

    def room(self) -> bool:
        return self._off + self._read <= len(self._arena)

    def recv(self, sock: socket.socket) -> tuple[list[memoryview], Endpoint] | None:
        """One read: the datagrams and their source; None when nothing is queued."""
        start = self._off
        buf = self._mv[start : start + self._read]
        try:
            n, anc, _, addr = sock.recvmsg_into([buf], _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return None
        seg = 0
        for level, kind, value in anc:
            if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
                seg = _I32.unpack_from(value)[0]
        self._off = start + n
        if seg <= 0 or seg >= n:
            return [buf[:n]], (addr[0], addr[1])
        return [buf[o : min(o + seg, n)] for o in range(0, n, seg)], (addr[0], addr[1])
