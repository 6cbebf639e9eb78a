"""systemd's notification protocol (sd_notify(3)), without libsystemd.

A service started with ``Type=notify`` finds ``NOTIFY_SOCKET`` in its
environment: a UNIX datagram socket, a path or (``@name``) an abstract
address.  Each notification is one datagram of ``KEY=VALUE`` lines:
``READY=1`` once the service does what it is for, ``STOPPING=1`` when it
begins to stop, ``RELOADING=1`` when it begins to reload (systemd 253 and
later want ``MONOTONIC_USEC`` with it, the CLOCK_MONOTONIC time in
microseconds, and ``READY=1`` again when the reload is done), ``STATUS=``
a line for ``systemctl status``.  Without ``NOTIFY_SOCKET`` every call does
nothing, so the daemons call these unconditionally.
"""

from __future__ import annotations

import os
import socket
import time

ENV = "NOTIFY_SOCKET"


def _address() -> str | None:
    addr = os.environ.get(ENV, "")
    if addr.startswith("@"):
        return "\0" + addr[1:]  # an abstract socket
    if addr.startswith("/"):
        return addr
    return None  # unset, or a kind we do not speak (vsock)


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ...) as one notification; True if sent.

    Never raises: a service manager that went away must not stop the service."""
    addr = _address()
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall("\n".join(fields).encode())
    except OSError:
        return False
    return True


def ready(status: str | None = None) -> bool:
    """Call once the service answers (sockets bound and served)."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def stopping(status: str | None = None) -> bool:
    """Call when the service begins to shut down."""
    return notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def reloading() -> bool:
    """Call when a reload begins; call :func:`ready` when it is done."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def child_environment() -> dict[str, str]:
    """This process's environment without ``NOTIFY_SOCKET``: for the programs a
    service starts, whose own notifications would be taken for its own."""
    return {k: v for k, v in os.environ.items() if k != ENV}
