"""One epoll set for the proxy's connection sockets, watched by the asyncio loop.

Theory of operation
-------------------
asyncio's ``add_reader``/``remove_reader`` cost a selector lookup, a
transport check and a new handle each, and every ready socket becomes a
handle of its own on the loop's queue.  A short TCP connection changes its
interest several times (connect, read both sides, drain, close), so the
proxy keeps its connection sockets in an epoll set of its own instead:
:meth:`Poller.watch` is one ``epoll_ctl``, and the loop sees only the
epoll descriptor, readable whenever any socket in the set is ready, on
which :meth:`Poller._dispatch` calls each ready socket's callback with its
event mask.  Level-triggered, so a batch cut short loses nothing.

A socket unwatched during a batch is skipped for the rest of it: its
number may already belong to a new socket whose stale event would lie.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable

IN = select.EPOLLIN
OUT = select.EPOLLOUT
READABLE = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR  # a read will not block
WRITABLE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR  # a send will not block
BATCH = 256  # events per dispatch; the rest come at the loop's next turn

Callback = Callable[[int], None]


class Poller:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ep = select.epoll()
        self._cbs: dict[int, Callback] = {}
        self._gone: set[int] = set()  # unwatched during the current batch
        loop.add_reader(self._ep.fileno(), self._dispatch)

    def watch(self, fd: int, mask: int, cb: Callback) -> None:
        """Call ``cb(events)`` while ``fd`` is ready for ``mask`` (IN, OUT or both);
        a mask of 0 stops watching, as must happen before the socket closes."""
        if fd in self._cbs:
            if mask:
                self._ep.modify(fd, mask)
                self._cbs[fd] = cb
            else:
                self._ep.unregister(fd)
                del self._cbs[fd]
                self._gone.add(fd)
        elif mask:
            self._ep.register(fd, mask)
            self._cbs[fd] = cb

    def __len__(self) -> int:
        return len(self._cbs)

    def _dispatch(self) -> None:
        gone = self._gone
        gone.clear()
        cbs = self._cbs
        for fd, events in self._ep.poll(0, BATCH):
            if fd in gone:
                continue
            cb = cbs.get(fd)
            if cb is not None:
                cb(events)
        gone.clear()

    def close(self) -> None:
        """Stop watching everything (the sockets stay open)."""
        if self._ep.closed:
            return
        self._loop.remove_reader(self._ep.fileno())
        self._ep.close()
        self._cbs.clear()
