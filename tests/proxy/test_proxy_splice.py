"""The splice on loopback sockets: backpressure, half-close, resets, idle clock."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
from collections.abc import Awaitable, Callable

from wgpy.proxy.poller import Poller
from wgpy.proxy.splice import Pipe
from wgpy.proxy.stats import RuleStats

SMALL = 64 * 1024


def _tcp_pair(small: bool) -> tuple[socket.socket, socket.socket]:
    """A connected (a, b) pair over 127.0.0.1 with optionally tiny kernel buffers."""
    lst = socket.create_server(("127.0.0.1", 0))
    a = socket.socket()
    if small:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    a.connect(lst.getsockname())
    b, _ = lst.accept()
    lst.close()
    if small:
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    for s in (a, b):
        s.setblocking(False)
    return a, b


Body = Callable[[socket.socket, socket.socket, Pipe, asyncio.Future[None]], Awaitable[None]]


def run_pipe(
    body: Body, small: bool = False, clock: Callable[[], float] | None = None
) -> RuleStats:
    """client <-> [A | pipe | B] <-> origin; ``body`` drives client and origin."""

    async def main() -> RuleStats:
        loop = asyncio.get_running_loop()
        client, a = _tcp_pair(small)
        b, origin = _tcp_pair(small)
        stats = RuleStats()
        done: asyncio.Future[None] = loop.create_future()
        pipe = Pipe(SMALL, clock or loop.time, stats, lambda p: done.set_result(None))
        poller = Poller(loop)
        pipe.start(poller, a, b)
        try:
            await asyncio.wait_for(body(client, origin, pipe, done), 30)
            assert not len(poller), "a closed pipe left a socket watched"
        finally:
            poller.close()
            client.close()
            origin.close()
        return stats

    return asyncio.run(main())


async def recv_all(sock: socket.socket, limit: int = 1 << 26) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while len(out) < limit:
        b = await loop.sock_recv(sock, 1 << 16)
        if not b:
            break
        out += b
    return bytes(out)


def test_slow_origin_does_not_make_the_proxy_buffer_without_bound() -> None:
    total = 16 * 1024 * 1024
    payload = bytes(range(256)) * (total // 256)

    async def body(client: socket.socket, origin: socket.socket, pipe: Pipe,
                   done: asyncio.Future[None]) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        sender = asyncio.ensure_future(loop.sock_sendall(client, payload))
        peak = 0
        for _ in range(40):  # the origin reads nothing for 0.4 s
            await asyncio.sleep(0.01)
            peak = max(peak, pipe.origin.buffered() + pipe.client.buffered())
        assert not sender.done(), "the client should be blocked by backpressure"
        assert 0 < pipe.counter.bytes_up < 4 * 1024 * 1024
        assert peak <= SMALL + 256 * 1024  # high-water mark + one read chunk
        received = asyncio.ensure_future(recv_all(origin, total))
        await sender
        got = await received
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        client.shutdown(socket.SHUT_WR)
        origin.shutdown(socket.SHUT_WR)
        await done

    stats = run_pipe(body, small=True)
    assert stats.bytes_up == total


def test_half_close_each_direction_finishes_independently() -> None:
    async def body(client: socket.socket, origin: socket.socket, pipe: Pipe,
                   done: asyncio.Future[None]) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"request")
        client.shutdown(socket.SHUT_WR)  # client is done sending ...
        assert await recv_all(origin) == b"request"  # ... origin sees EOF after the data
        await asyncio.sleep(0.05)
        assert not done.done()  # the other direction still open
        await loop.sock_sendall(origin, b"response after EOF")
        origin.shutdown(socket.SHUT_WR)
        assert await recv_all(client) == b"response after EOF"
        await done

    stats = run_pipe(body)
    assert (stats.bytes_up, stats.bytes_down) == (7, 18)


def test_origin_reset_is_passed_on_as_a_reset() -> None:
    async def body(client: socket.socket, origin: socket.socket, pipe: Pipe,
                   done: asyncio.Future[None]) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"x")
        assert await loop.sock_recv(origin, 10) == b"x"
        origin.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        origin.close()
        await done
        try:
            data = await loop.sock_recv(client, 10)
        except ConnectionResetError:
            return
        raise AssertionError(f"expected a reset, got {data!r}")

    run_pipe(body)


def test_idle_time_follows_the_injected_clock() -> None:
    now = [100.0]

    async def body(client: socket.socket, origin: socket.socket, pipe: Pipe,
                   done: asyncio.Future[None]) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        now[0] = 130.0
        assert pipe.idle_for(now[0]) == 30.0
        await loop.sock_sendall(client, b"ping")
        assert await loop.sock_recv(origin, 10) == b"ping"
        now[0] = 135.0
        assert pipe.idle_for(now[0]) == 5.0
        pipe.close("idle")
        await done
        assert await recv_all(client) == b"" and pipe.reason == "idle"

    run_pipe(body, clock=lambda: now[0])


def _silent_case(origin_first: str) -> bool:
    """Run one exchange and return ``pipe.origin_silent``."""
    seen: list[bool] = []

    async def body(client: socket.socket, origin: socket.socket, pipe: Pipe,
                   done: asyncio.Future[None]) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"GET / HTTP/1.0\r\n\r\n")
        assert await loop.sock_recv(origin, 100)
        if origin_first == "reply":
            await loop.sock_sendall(origin, b"HTTP/1.0 200 OK\r\n\r\n")
        elif origin_first == "client-eof":
            client.shutdown(socket.SHUT_WR)
            assert await recv_all(origin) == b""
        elif origin_first == "reset":
            origin.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        origin.close()
        await recv_all(client) if origin_first != "reset" else await asyncio.sleep(0.05)
        client.close()
        await done
        seen.append(pipe.origin_silent)

    run_pipe(body)
    return seen[0]


def test_an_origin_that_hangs_up_without_a_byte_is_noted() -> None:
    # A plain server fed a PROXY header it does not expect typically reads,
    # finds no request line and closes: the client gets an empty reply.
    assert _silent_case("close") is True
    assert _silent_case("reset") is True
    # Not silent: the origin answered, or the client had finished first.
    assert _silent_case("reply") is False
    assert _silent_case("client-eof") is False
