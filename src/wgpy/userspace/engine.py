"""The engine: a WireGuard ``Device`` and a ``netstack.Stack`` over UDP sockets.

Theory of operation.  Both cores are sans-IO; this is the one place that
gives them a clock, sockets and a thread.  The engine thread waits (epoll)
on the UDP sockets, a wake-up pipe and the earlier of the two cores'
deadlines.  What arrives is decrypted in batches (``decapsulate_batch``,
GRO reads), and the inner packets go to the stack in one ``receive`` call;
the stack's output is encrypted in one ``encapsulate_batch`` and sent with
UDP GSO; ICMP errors the device writes back (a destination no peer takes)
go to the stack as if they had arrived.

One lock guards both cores.  The application's threads take it too: a
``send`` on a socket runs the stack and sends the resulting datagrams from
the caller's thread (``flush``), so the engine thread is not a hop on the
send path.  Whoever holds the lock and changes something hands the events
the stack reports to the waiting sockets (``Handle.ready``): a blocked
``recv`` waits on a ``threading.Condition`` built on this lock; an asyncio
transport is called back on its loop.  When the application's call moves a
deadline earlier than the engine planned to wake, it writes to the pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

from wgpy.io.batch import GroReceiver, GsoSender, enable_gro
from wgpy.io.udp import UdpBind
from wgpy.netstack import Ready, Stack
from wgpy.netstack.stack import Waitable
from wgpy.protocol import (
    Action,
    Device,
    HandshakeKeys,
    LogEvent,
    SendBatch,
    SendDatagram,
    WriteTun,
)

log = logging.getLogger("wgpy.userspace")

READS_PER_WAKE = 64  # UDP reads per wake-up before the stack runs (bounded: timers too)
IDLE_PREPARE = 4  # Device.prepare work per idle moment


class Waiter:
    """What the application's objects (sockets, listeners, transports) are to
    the engine: something to tell when its stack object has news.  The
    engine calls ``ready`` holding its lock."""

    def ready(self, flags: Ready) -> None:
        raise NotImplementedError


class Engine:
    """Runs ``device`` and ``stack`` over ``bind``; see the module docstring."""

    def __init__(self, device: Device, stack: Stack, bind: UdpBind) -> None:
        self.device = device
        self.stack = stack
        self.bind = bind
        self.lock = threading.Lock()
        self.send_errors: Counter[int] = Counter()
        self._gso = GsoSender(self.send_errors)
        self._gro = GroReceiver()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll = select.epoll()
        self._socks = {s.fileno(): s for s in bind.sockets()}
        for fd, s in self._socks.items():
            enable_gro(s)
            self._epoll.register(fd, select.EPOLLIN)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._sleep_until = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="wgpy-userspace", daemon=True)
        self.failure: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and close the sockets (idempotent)."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self._epoll.close()
        self.bind.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    @property
    def closed(self) -> bool:
        return self._closed

    @staticmethod
    def now() -> float:
        return time.monotonic()

    @contextlib.contextmanager
    def locked(self) -> Iterator[float]:
        """Hold the lock for an application call; yields ``now``.  On the way
        out, what the call made the stack send is sent, its events are handed
        out, and the engine is woken if a deadline moved earlier."""
        with self.lock:
            if self._closed:
                raise OSError(9, "the tunnel is closed")
            try:
                yield time.monotonic()
            finally:
                self.settle()

    def settle(self) -> None:
        """Send what the stack has queued, hand out its events and wake the
        engine for an earlier deadline (the lock is held: before an
        application thread waits, and at the end of each call)."""
        self._flush(time.monotonic(), time.time())
        self._dispatch()
        self._maybe_wake()

    # -- the thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self.lock:
                    if self._closed:
                        return
                    timeout = self._plan(time.monotonic())
                events = self._epoll.poll(timeout)
                with self.lock:
                    if self._closed:
                        return
                    now = time.monotonic()
                    wall = time.time()
                    for fd, _ in events:
                        sock = self._socks.get(fd)
                        if sock is not None:
                            self._receive(sock, now, wall)
                        elif fd == self._wake_r:
                            with contextlib.suppress(BlockingIOError):
                                os.read(self._wake_r, 4096)
                    self._timers(now, wall)
                    self._flush(now, wall)
                    self._dispatch()
                    if self.device.prepare_pending and not events:
                        self.device.prepare(IDLE_PREPARE)
        except BaseException as e:  # noqa: BLE001 - reported to every waiter
            log.exception("userspace engine failed")
            with self.lock:
                self.failure = e
                self._closed = True
                self._fail_all()

    def _plan(self, now: float) -> float:
        deadlines = [d for d in (self.device.next_deadline(), self.stack.next_deadline())
                     if d is not None]
        if self.device.prepare_pending:
            deadlines.append(now)  # idle work: poll without sleeping
        until = min(deadlines) if deadlines else now + 3600.0
        self._sleep_until = until
        return max(0.0, until - now)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _maybe_wake(self) -> None:
        deadlines = [d for d in (self.device.next_deadline(), self.stack.next_deadline())
                     if d is not None]
        if deadlines and min(deadlines) < self._sleep_until:
            self._sleep_until = min(deadlines)
            self._wake()

    def _receive(self, sock: socket.socket, now: float, wall: float) -> None:
        rx = self._gro
        rx.reset()
        inner: list[bytes] = []
        dev = self.device
        for _ in range(READS_PER_WAKE):
            if not rx.room():
                break
            try:
                got = rx.recv(sock)
            except OSError:
                break  # an ICMP error queued on the socket
            if got is None:
                break
            datagrams, source = got
            self._carry_out(dev.decapsulate_batch(datagrams, source, now, wall), inner)
        if inner:
            self.stack.receive(inner, now)

    def _timers(self, now: float, wall: float) -> None:
        nd = self.device.next_deadline()
        if nd is not None and nd <= now:
            inner: list[bytes] = []
            self._carry_out(self.device.tick(now, wall), inner)
            if inner:
                self.stack.receive(inner, now)
        nd = self.stack.next_deadline()
        if nd is not None and nd <= now:
            self.stack.tick(now)

    def _flush(self, now: float, wall: float) -> None:
        """Encrypt and send everything the stack has for the tunnel."""
        stack = self.stack
        for _ in range(16):  # an ICMP error written back can make more output
            if not stack.has_output:
                return
            inner: list[bytes] = []
            self._carry_out(self.device.encapsulate_batch(stack.take_output(), now, wall), inner)
            if inner:
                stack.receive(inner, now)

    def _carry_out(self, actions: list[Action], inner: list[bytes]) -> None:
        for act in actions:
            kind = type(act)
            if kind is SendBatch:
                assert isinstance(act, SendBatch)
                sock = self.bind.socket_for(act.endpoint)
                if sock is not None:
                    self._gso.send(sock, act.data, act.sizes, act.endpoint)
            elif kind is WriteTun:
                assert isinstance(act, WriteTun)
                inner.extend(act.packets)
            elif kind is SendDatagram:
                assert isinstance(act, SendDatagram)
                self.bind.send(act.data, act.endpoint, self.send_errors)
            elif kind is LogEvent:
                assert isinstance(act, LogEvent)
                log.debug("%s", act.message)
            elif kind is HandshakeKeys:
                pass  # no key log here

    def _dispatch(self) -> None:
        for obj, flags in self.stack.take_events():
            handle = obj.user
            if isinstance(handle, Waiter):
                handle.ready(flags)

    def _fail_all(self) -> None:
        objs: list[Waitable] = [*self.stack.conns.values(), *self.stack.listeners.values(),
                                *self.stack.udp.values(), *self.stack.echo.values()]
        for obj in objs:
            handle = obj.user
            if isinstance(handle, Waiter):
                handle.ready(Ready.CLOSED | Ready.READABLE | Ready.WRITABLE | Ready.ACCEPT
                             | Ready.DATAGRAM)
