"""What the stack tells its shell, besides the packets it wants sent.

The stack does not call back into the application.  Every object the shell
can wait on (a TCP connection, a listener, a UDP endpoint, an echo
identifier) collects ``Ready`` flags while the stack runs; ``Stack.take_events``
returns each touched object once with the flags it gathered, and the shell
wakes whoever waits on it.  Each object has a ``user`` attribute that the
stack never reads, for the shell's own handle.
"""

from __future__ import annotations

import enum


class Ready(enum.IntFlag):
    NONE = 0
    CONNECTED = 1  # an active open completed
    READABLE = 2  # data, or the end of the peer's data, can be read
    WRITABLE = 4  # send buffer space was freed
    CLOSED = 8  # the connection is over (``error`` says how, None for an orderly close)
    ACCEPT = 16  # a listener has an established connection to hand out
    DATAGRAM = 32  # a UDP endpoint or an echo identifier received something
