"""The event loop of wgpyd: epoll, a timer heap and signal wake-ups.

Theory of operation.  wgpyd waits on few file descriptors (the TUN, one or
two UDP sockets, the UAPI socket and its clients) and one timer that follows
the protocol core's next deadline.  asyncio can do that, but each wake-up
goes through its selector wrapper, handle objects and a context switch per
callback, and a ping through two wgpyds wakes a daemon four times: that
cost was a large share of the latency wgpyd added (docs/performance.md has
the figures).  This loop is the whole of what wgpyd needs:

* ``add_reader``/``add_writer``: level-triggered epoll callbacks;
* ``call_at``/``call_later``: one-shot timers on the monotonic clock,
  cancellable, run in deadline order;
* ``call_when_idle``: work that may wait, run once the loop is about to
  sleep (busy polling over, nothing waiting);
* signals: ``set_wakeup_fd`` makes a signal end the ``epoll.poll`` at once,
  and its handler runs from the loop, never in the middle of a callback;
* busy polling: after events, keep polling without sleeping for
  ``busy_poll`` seconds, yielding the CPU (``sched_yield``) between polls.

Why busy polling: on virtual CPUs that halt when idle, a process that slept
for more than about a millisecond runs its next steps several times slower
(caches and branch predictors lost).  A reply usually comes within a round
trip, so staying awake for one keeps the code that handles it warm.  Its
cost is CPU only while traffic flows (less per ping than wireguard-go's,
whose runtime spins too); an idle tunnel never spins, and a busy one has no
gaps to spin in.

A callback that raises is logged with its traceback and the loop goes on,
as asyncio does: one bad packet or request must not take the device down.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable

Callback = Callable[[], None]
_READ = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP
_WRITE = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP


class Timer:
    """A pending ``call_at``; ``cancel()`` keeps it from running."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callback) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(
        self, on_error: Callable[[str], None] | None = None, busy_poll: float = 0.0
    ) -> None:
        """``on_error`` receives the report of a callback that raised (default:
        stderr); ``busy_poll`` is how long (seconds) to keep polling after an event."""
        self.busy_poll = busy_poll
        self._awake_until = 0.0
        self._ep = select.epoll()
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._masks: dict[int, int] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._idle: list[Callback] = []
        self._seq = itertools.count()
        self._signals: dict[int, Callback] = {}
        self._old_handlers: dict[int, object] = {}
        self._stopped = False
        self._on_error = on_error or _stderr
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._old_wakeup_fd: int | None = None

    time = staticmethod(time.monotonic)

    # -- file descriptors ----------------------------------------------------
    def _update(self, fd: int) -> None:
        mask = (select.EPOLLIN if fd in self._readers else 0) | (
            select.EPOLLOUT if fd in self._writers else 0
        )
        old = self._masks.get(fd)
        if not mask:
            if old is not None:
                del self._masks[fd]
                with contextlib.suppress(OSError, ValueError):
                    self._ep.unregister(fd)
        elif old is None:
            self._ep.register(fd, mask)
            self._masks[fd] = mask
        elif old != mask:
            self._ep.modify(fd, mask)
            self._masks[fd] = mask

    def add_reader(self, fd: int, callback: Callback) -> None:
        self._readers[fd] = callback
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, callback: Callback) -> None:
        self._writers[fd] = callback
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self._writers.pop(fd, None) is not None:
            self._update(fd)

    # -- timers --------------------------------------------------------------
    def call_at(self, when: float, callback: Callback) -> Timer:
        timer = Timer(callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(self.time() + delay, callback)

    def call_when_idle(self, callback: Callback) -> None:
        """Run ``callback`` once, when the loop next has nothing to do and is
        about to sleep.  For work done ahead of need: run right after the
        events that asked for it, it would sit in front of the reply they are
        waiting for (and, with two processes sharing a vCPU, in front of the
        peer that the send just woke on it)."""
        self._idle.append(callback)

    # -- signals -------------------------------------------------------------
    def add_signal_handler(self, sig: int, callback: Callback) -> None:
        """Run ``callback`` from the loop when ``sig`` arrives (main thread only)."""
        if self._old_wakeup_fd is None:
            self._old_wakeup_fd = signal.set_wakeup_fd(
                self._wake_w.fileno(), warn_on_full_buffer=False
            )
            self.add_reader(self._wake_r.fileno(), self._on_wakeup)
        self._signals[sig] = callback
        # A Python-level handler is needed for the wake-up byte to be written;
        # the work is done by the loop, outside any other callback.
        self._old_handlers.setdefault(sig, signal.signal(sig, _ignore))

    def _on_wakeup(self) -> None:
        try:
            data = self._wake_r.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        for sig in data:
            cb = self._signals.get(sig)
            if cb is not None:
                self._run(cb)

    # -- running -------------------------------------------------------------
    def keep_awake(self, until: float) -> None:
        """Busy-poll until ``until`` (monotonic), when busy polling is on: for a
        callback that knows a reply is coming later than ``busy_poll``."""
        if self.busy_poll and until > self._awake_until:
            self._awake_until = until

    def stop(self) -> None:
        self._stopped = True

    def _run(self, callback: Callback) -> None:
        try:
            callback()
        except Exception:
            self._report()

    def run(self) -> None:
        """Run callbacks until ``stop()``."""
        readers = self._readers
        writers = self._writers
        timers = self._timers
        poll = self._ep.poll
        spin = self.busy_poll
        spin_until = 0.0
        monotonic = time.monotonic
        while not self._stopped:
            if spin_until:
                events = poll(0)
                if events:
                    spin_until = max(spin_until, monotonic() + spin)
                elif monotonic() >= spin_until:
                    spin_until = 0.0
                else:
                    os.sched_yield()
            else:
                if self._idle:
                    # Idle work first, if nothing is waiting; then round again
                    # (timers included) before sleeping.
                    events = poll(0)
                    if not events:
                        idle, self._idle = self._idle, []
                        for work in idle:
                            self._run(work)
                else:
                    timeout = -1.0  # the next live timer, looked up only to sleep
                    while timers:
                        when, _, timer = timers[0]
                        if timer.cancelled:
                            heapq.heappop(timers)
                            continue
                        timeout = max(0.0, when - monotonic())
                        break
                    events = poll(timeout)
                if spin and events:
                    spin_until = monotonic() + spin
            for fd, ev in events:
                if ev & _READ:
                    cb = readers.get(fd)
                    if cb is not None:
                        try:
                            cb()
                        except Exception:
                            self._report()
                if ev & _WRITE:
                    cb = writers.get(fd)
                    if cb is not None:
                        try:
                            cb()
                        except Exception:
                            self._report()
            if timers:
                now = monotonic()
                while timers and timers[0][0] <= now:
                    timer = heapq.heappop(timers)[2]
                    if not timer.cancelled:
                        timer.cancelled = True  # it has run: a late cancel() is a no-op
                        self._run(timer.callback)
            if self._awake_until:
                spin_until = max(spin_until, self._awake_until)
                self._awake_until = 0.0

    def _report(self) -> None:
        # Called from an ``except`` block: format_exc() sees that exception.
        self._on_error("Exception in event loop callback:\n" + traceback.format_exc())

    def close(self) -> None:
        """Forget every callback and restore the signal handlers."""
        if self._old_wakeup_fd is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self._old_wakeup_fd = None
        for sig, old in self._old_handlers.items():
            with contextlib.suppress(ValueError, TypeError, OSError):
                signal.signal(sig, old)  # type: ignore[arg-type]
        self._old_handlers.clear()
        self._readers.clear()
        self._writers.clear()
        self._masks.clear()
        self._timers.clear()
        self._ep.close()
        self._wake_r.close()
        self._wake_w.close()


def _ignore(signum: int, frame: object) -> None:
    pass


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
