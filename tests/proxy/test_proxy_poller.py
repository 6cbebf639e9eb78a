"""The proxy's epoll set: callbacks per ready socket, and no stale event for
a socket number reused within one batch."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

from wgpy.proxy.poller import IN, READABLE, Poller


def test_ready_sockets_get_their_callbacks_through_the_loop() -> None:
    async def main() -> list[tuple[str, int]]:
        loop = asyncio.get_running_loop()
        poller = Poller(loop)
        a, b = socket.socketpair()
        c, d = socket.socketpair()
        seen: list[tuple[str, int]] = []
        got = asyncio.Event()

        def on_a(events: int) -> None:
            seen.append(("a", events & READABLE))
            a.recv(10)
            poller.watch(a.fileno(), 0, on_a)
            got.set()

        def on_c(_events: int) -> None:
            seen.append(("c", 0))

        try:
            poller.watch(a.fileno(), IN, on_a)
            poller.watch(c.fileno(), IN, on_c)  # never readable: never called
            b.send(b"x")
            await asyncio.wait_for(got.wait(), 5)
            await asyncio.sleep(0.05)  # a second call would come now
            assert len(poller) == 1
        finally:
            poller.close()
            for s in (a, b, c, d):
                s.close()
        return seen

    assert asyncio.run(main()) == [("a", READABLE & IN)]


def test_a_number_reused_in_a_batch_gets_no_stale_event() -> None:
    loop = asyncio.new_event_loop()  # never run: the batches are driven by hand
    poller = Poller(loop)
    pairs = [socket.socketpair() for _ in range(3)]
    first, second, fresh = pairs
    calls: list[str] = []
    reused: list[socket.socket] = []

    def on_fresh(_events: int) -> None:
        calls.append("fresh")

    def make(name: str, own: socket.socket, other: socket.socket) -> Callable[[int], None]:
        def cb(_events: int) -> None:
            calls.append(name)
            poller.watch(own.fileno(), 0, cb)
            # The other socket is ready in this same batch: close it and give
            # its number to a new socket, ready too, before the batch reaches it.
            fd = other.fileno()
            poller.watch(fd, 0, cb)
            other.detach()
            os.dup2(fresh[0].fileno(), fd)
            reused.append(socket.socket(fileno=fd))
            poller.watch(fd, IN, on_fresh)

        return cb

    try:
        poller.watch(first[0].fileno(), IN, make("first", first[0], second[0]))
        poller.watch(second[0].fileno(), IN, make("second", second[0], first[0]))
        for _, w in pairs:
            w.send(b"x")
        poller._dispatch()  # both were ready: one callback, no stale event
        assert len(calls) == 1 and calls[0] in ("first", "second"), calls
        poller._dispatch()  # the next batch: the new socket's own event
        assert calls[1:] == ["fresh"], calls
    finally:
        poller.close()
        loop.close()
        for s in (*reused, *(s for p in pairs for s in p)):
            if s.fileno() >= 0:
                s.close()
