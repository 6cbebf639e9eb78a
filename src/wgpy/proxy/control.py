"""The control socket: a unix stream socket speaking one line each way.

Requests are ``status`` or ``reload``; the answer is one JSON object.  The
socket is created mode 0600; a stale socket left by a dead proxy is
replaced, a live one is an error (two proxies must not share it).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

Handler = Callable[[str], Awaitable[dict[str, object]]]
MAX_REQUEST = 256


class ControlError(RuntimeError):
    """The control socket could not be used; the text names the socket."""


class NotListening(ControlError):
    """No proxy listens on the socket (it does not exist, or nobody accepts)."""


def _in_use(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


async def serve(path: str, handler: Handler) -> asyncio.AbstractServer:
    """Listen on ``path`` and answer each request line with ``handler``'s JSON."""
    p = Path(path)
    if p.exists() or p.is_symlink():
        if _in_use(path):
            raise ControlError(f"{path}: another proxy is already listening there")
        p.unlink()
    p.parent.mkdir(parents=True, exist_ok=True)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            req = line[:MAX_REQUEST].decode("ascii", "replace").strip()
            reply = await handler(req)
            writer.write(json.dumps(reply, sort_keys=True).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), 5.0)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    old = os.umask(0o077)
    try:
        server = await asyncio.start_unix_server(client, path=path)
    finally:
        os.umask(old)
    return server


def probe(path: str, timeout: float = 2.0) -> dict[str, object] | None:
    """The status of the proxy listening on ``path``, or None when none is.

    "None is" means the socket does not exist or nothing accepts on it (a
    stale socket left by a proxy that died).  Anything else, such as a proxy
    that accepts but does not answer in time, is a :class:`ControlError`: the
    caller cannot tell, and must not assume the proxy is gone.
    """
    try:
        return request(path, "status", timeout)
    except NotListening:
        return None


def request(path: str, command: str, timeout: float = 10.0) -> dict[str, object]:
    """Send ``command`` to a running proxy and return its JSON answer.

    :raises NotListening: no proxy listens on ``path``.
    :raises ControlError: any other failure.
    """
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except FileNotFoundError:
            raise NotListening(f"{path}: no such socket (is the proxy running?)") from None
        except ConnectionRefusedError:
            raise NotListening(f"{path}: nothing listens there (is the proxy running?)") from None
        s.sendall(command.encode() + b"\n")
        chunks: list[bytes] = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    except OSError as e:
        raise ControlError(f"{path}: {e.strerror or e}") from None
    finally:
        s.close()
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise ControlError(f"{path}: malformed answer") from None
    if not isinstance(reply, dict):
        raise ControlError(f"{path}: malformed answer")
    return reply
