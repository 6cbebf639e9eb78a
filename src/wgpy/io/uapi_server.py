"""The UAPI listening socket, ``/var/run/wireguard/NAME.sock``.

The socket is created (0600, in a 0700 directory) before the daemon forks,
so it exists by the time ``wgpyd`` returns, which wg-quick relies on.  A
stale socket left by a dead process is replaced; a live one means the
interface is already served, and we refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from wgpy.control.uapi import EINVAL, SOCKET_DIR, socket_path

Handler = Callable[[str, list[str]], Awaitable[str]]

MAX_REQUEST_LINES = 1 << 20
MAX_LINE = 1 << 16


class UapiInUse(OSError):
    pass


def listen(interface: str, directory: Path = SOCKET_DIR) -> socket.socket:
    """Create and bind the listening socket for ``interface``."""
    old = os.umask(0o077)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    finally:
        os.umask(old)
    # Only root may reach a device's configuration (wireguard-go leaves 0755).
    os.chmod(directory, 0o700)
    path = socket_path(interface, directory)
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # stale: nobody is listening
        else:
            raise UapiInUse(f"{path} is in use by another process")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    sock.setblocking(False)
    return sock


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler
) -> None:
    """Serve requests on one connection until the client closes it.

    The real ``wg`` opens and closes an empty connection before each command;
    that, and any garbage, ends the connection quietly.
    """
    try:
        while True:
            op = await reader.readline()
            if not op or not op.endswith(b"\n"):
                return
            if op == b"get=1\n":
                nxt = await reader.readexactly(1)
                if nxt != b"\n":
                    writer.write(f"errno={EINVAL}\n\n".encode())
                    await writer.drain()
                    return
                reply = await handler("get", [])
            elif op == b"set=1\n":
                lines: list[str] = []
                while True:
                    raw = await reader.readline()
                    if not raw:
                        return
                    line = raw.rstrip(b"\n").decode("utf-8", "replace")
                    if not line:
                        break
                    if len(lines) >= MAX_REQUEST_LINES or len(raw) > MAX_LINE:
                        writer.write(f"errno={EINVAL}\n\n".encode())
                        await writer.drain()
                        return
                    lines.append(line)
                reply = await handler("set", lines)
            else:
                return
            writer.write(reply.encode())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        return
    finally:
        with contextlib.suppress(Exception):
            writer.close()
