"""asyncio over the tunnel: ``open_connection``, ``start_server`` and the
transport under their streams.

The engine runs in its own thread; a connection's events reach the event
loop with ``call_soon_threadsafe`` (at most one call pending per
connection), and the loop then takes the data out under the engine's lock
and hands it to the protocol outside it.  Writes go into the TCP send
buffer directly; what it cannot take waits in the transport and the
protocol is paused above the high-water mark, as asyncio's own transports
do.  ``asyncio.StreamReaderProtocol`` and ``StreamWriter`` work unchanged
on top.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from wgpy.netstack import Ready, State, TcpConnection, TcpListener, UdpEndpoint
from wgpy.netstack.ip import text
from wgpy.netstack.tcp import error_for
from wgpy.userspace import resolver
from wgpy.userspace.engine import Engine, Waiter

if TYPE_CHECKING:
    from wgpy.userspace.tunnel import Tunnel

READ_CHUNK = 1 << 18
HIGH_WATER = 1 << 18
LOW_WATER = 1 << 16
ClientCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]


class TcpTransport(asyncio.Transport, Waiter):
    """An asyncio transport over one ``TcpConnection``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, engine: Engine, conn: TcpConnection,
                 protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._loop = loop
        self._engine = engine
        self._conn = conn
        self._protocol: Any = protocol
        self._pending = bytearray()
        self._reading = True
        self._eof_wanted = False
        self._closing = False
        self._lost = False
        self._eof_seen = False
        self._write_paused = False
        self._high = HIGH_WATER
        self._low = LOW_WATER
        self._scheduled = False
        conn.user = self

    # -- from the engine thread (lock held) ------------------------------------------
    def ready(self, flags: Ready) -> None:
        if not self._scheduled and not self._lost:
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._service)

    # -- on the loop --------------------------------------------------------------------
    def start(self) -> None:
        """Call after ``protocol.connection_made``: deliver what is already there."""
        with self._engine.locked():
            self._scheduled = True
        self._loop.call_soon(self._service)

    def _service(self) -> None:
        conn = self._conn
        data = b""
        eof = False
        lost = False
        error: int | None = None
        with self._engine.locked() as now:
            self._scheduled = False
            if self._lost:
                return
            self._push(now)
            if self._reading and conn.readable:
                data = conn.recv(READ_CHUNK, now)
            if conn.at_eof and not self._eof_seen and self._reading:
                eof = True
                self._eof_seen = True
            if conn.state is State.CLOSED and not conn.readable:
                lost = True
                error = conn.error
            elif self._closing and not self._pending:
                conn.user = None
                conn.close(now)
                lost = True
            if conn.readable and self._reading:
                self._scheduled = True
                self._loop.call_soon(self._service)
        if data:
            self._protocol.data_received(data)
        if eof and not lost:
            if not self._protocol.eof_received():
                self.close()
        elif eof and lost and error is None:
            self._protocol.eof_received()
        if self._write_paused and len(self._pending) <= self._low:
            self._write_paused = False
            self._protocol.resume_writing()
        if lost:
            self._lose(error_for(error) if error is not None and not self._closing else None)

    def _push(self, now: float) -> None:
        conn = self._conn
        if self._pending and conn.state is not State.CLOSED and not conn.fin_queued:
            try:
                n = conn.send(self._pending, now)
            except OSError:
                self._pending.clear()
                return
            del self._pending[:n]
        if self._eof_wanted and not self._pending:
            conn.shutdown(now)

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._conn.user = None
        self._loop.call_soon(self._protocol.connection_lost, exc)

    # -- asyncio.Transport ------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._eof_wanted or self._lost:
            return
        if not data:
            return
        conn = self._conn
        with self._engine.locked() as now:
            if not self._pending and conn.state is not State.CLOSED:
                try:
                    n = conn.send(data, now)
                except OSError:
                    return  # connection_lost reports it
                if n < len(data):
                    self._pending += memoryview(data)[n:]
            else:
                self._pending += data
        if not self._write_paused and len(self._pending) > self._high:
            self._write_paused = True
            self._protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._eof_wanted or self._lost:
            return
        self._eof_wanted = True
        with self._engine.locked() as now:
            self._push(now)

    def get_write_buffer_size(self) -> int:
        return len(self._pending)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = HIGH_WATER if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def close(self) -> None:
        if self._closing or self._lost:
            return
        self._closing = True
        self._loop.call_soon(self._service)

    def abort(self) -> None:
        if self._lost:
            return
        with self._engine.locked() as now:
            self._conn.user = None
            self._conn.abort(now)
        self._pending.clear()
        self._lose(None)

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._loop.call_soon(self._service)

    def is_reading(self) -> bool:
        return self._reading and not self._lost

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        c = self._conn
        if name == "peername":
            return text(c.path.dst), c.rport
        if name == "sockname":
            return text(c.path.src), c.lport
        return default


class _Signal(Waiter):
    """Wakes a coroutine on the loop when a stack object has news."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.event = asyncio.Event()

    def ready(self, flags: Ready) -> None:
        self._loop.call_soon_threadsafe(self.event.set)


async def open_connection(tunnel: Tunnel, host: str, port: int, *, limit: int = 2 ** 16,
                          timeout: float | None = None
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` through ``tunnel``: names resolve through
    its DNS servers (in a thread), then each address is tried in turn."""
    loop = asyncio.get_running_loop()
    if resolver.literal(host) is not None:
        addrs = [host]
    else:
        addrs = await loop.run_in_executor(None, tunnel.resolve, host)
    first: OSError | None = None
    for addr in addrs:
        try:
            conn = await _connect(tunnel, addr, port, timeout)
        except OSError as e:
            first = first or e
            continue
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport = TcpTransport(loop, tunnel.engine, conn, protocol)
        protocol.connection_made(transport)
        transport.start()
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer
    assert first is not None
    raise first


async def _connect(tunnel: Tunnel, addr: str, port: int, timeout: float | None
                   ) -> TcpConnection:
    loop = asyncio.get_running_loop()
    engine = tunnel.engine
    signal = _Signal(loop)
    remote = resolver.literal(addr)
    assert remote is not None
    with engine.locked() as now:
        conn = engine.stack.connect(remote, port, now)
        conn.user = signal
    try:
        async with asyncio.timeout(timeout):
            while not (conn.established or conn.error is not None):
                await signal.event.wait()
                signal.event.clear()
    except TimeoutError:
        with engine.locked() as now:
            conn.user = None
            conn.abort(now)
        raise TimeoutError(errno.ETIMEDOUT, tunnel.explain_timeout(addr, port, timeout)
                           ) from None
    if conn.error is not None:
        exc = error_for(conn.error)
        raise type(exc)(conn.error, f"connecting to {addr}:{port}: {exc.strerror}")
    return conn


class TunnelServer(Waiter):
    """What ``start_server`` returns: close it to stop listening."""

    def __init__(self, loop: asyncio.AbstractEventLoop, engine: Engine, listener: TcpListener,
                 callback: ClientCallback, limit: int) -> None:
        self._loop = loop
        self._engine = engine
        self.listener = listener
        self._callback = callback
        self._limit = limit
        self._closed = asyncio.Event()
        self._scheduled = False
        listener.user = self

    @property
    def port(self) -> int:
        return self.listener.port

    def ready(self, flags: Ready) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._accept_all)

    def _accept_all(self) -> None:
        accepted: list[TcpConnection] = []
        with self._engine.locked():
            self._scheduled = False
            while (conn := self.listener.accept()) is not None:
                accepted.append(conn)
        for conn in accepted:
            reader = asyncio.StreamReader(limit=self._limit, loop=self._loop)
            protocol = asyncio.StreamReaderProtocol(reader, self._callback, loop=self._loop)
            transport = TcpTransport(self._loop, self._engine, conn, protocol)
            protocol.connection_made(transport)
            transport.start()

    def close(self) -> None:
        if self._closed.is_set():
            return
        if not self._engine.closed:
            with self._engine.locked() as now:
                self._engine.stack.close_listener(self.listener, now)
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def serve_forever(self) -> None:
        await self._closed.wait()

    async def __aenter__(self) -> TunnelServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def start_server(tunnel: Tunnel, callback: ClientCallback, port: int = 0,
                       host: str | None = None, *, limit: int = 2 ** 16, backlog: int = 128
                       ) -> TunnelServer:
    """``asyncio.start_server`` on the tunnel's address: ``callback(reader,
    writer)`` runs for each connection a peer opens to ``port``."""
    loop = asyncio.get_running_loop()
    local = resolver.literal(host) if host else None
    engine = tunnel.engine
    with engine.locked():
        listener = engine.stack.listen(port, local, backlog)
        return TunnelServer(loop, engine, listener, callback, limit)


class DatagramEndpoint(Waiter):
    """A UDP port of the tunnel for coroutines (``open_datagram``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, engine: Engine, ep: UdpEndpoint
                 ) -> None:
        self._loop = loop
        self._engine = engine
        self.ep = ep
        self._event = asyncio.Event()
        ep.user = self

    def ready(self, flags: Ready) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    @property
    def port(self) -> int:
        return self.ep.port

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        """Send one datagram to a literal address.  :raises OSError: as sendto."""
        remote = resolver.literal(address[0])
        if remote is None:
            raise OSError(errno.EINVAL, f"not an IP address: {address[0]!r}")
        with self._engine.locked():
            self._engine.stack.udp_send(self.ep, remote, int(address[1]), data)

    async def recvfrom(self) -> tuple[bytes, tuple[str, int]]:
        """The next datagram and its source; raises the errno of an ICMP error."""
        while True:
            with self._engine.locked():
                if self.ep.closed:
                    raise OSError(errno.EBADF, "closed")
                item = self.ep.take()
                code = self.ep.error
                self.ep.error = None
                if item is None:
                    self._event.clear()
            if item is not None:
                return item[0], (text(item[1]), item[2])
            if code is not None:
                raise error_for(code)
            await self._event.wait()

    def close(self) -> None:
        if not self._engine.closed:
            with self._engine.locked():
                self._engine.stack.udp_close(self.ep)
        self._event.set()


async def open_datagram(tunnel: Tunnel, port: int = 0, host: str | None = None
                        ) -> DatagramEndpoint:
    """A UDP port of the tunnel (``port`` 0: ephemeral) for coroutines."""
    loop = asyncio.get_running_loop()
    local = resolver.literal(host) if host else None
    engine = tunnel.engine
    with engine.locked():
        ep = engine.stack.udp_bind(port, local)
        return DatagramEndpoint(loop, engine, ep)
